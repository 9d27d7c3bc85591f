"""Phi-3-architecture LLMs: Phi-4-mini-instruct (partial rotary 0.75, tied embeddings, 200K vocab)."""

from __future__ import annotations

from llava_more.model.llm.base import LLMSpec

SPECS = (
    LLMSpec(
        id="phi4-mini",
        hf_id="microsoft/Phi-4-mini-instruct",
        template="phi4",
        checkpoint_config={
            "model_type": "phi3",
            "vocab_size": 200064,
            "hidden_size": 3072,
            "num_hidden_layers": 32,
            "num_attention_heads": 24,
            "num_key_value_heads": 8,
            "intermediate_size": 8192,
            "hidden_act": "silu",
            "rms_norm_eps": 1e-5,
            # The checkpoint's long-context "longrope" factors are read from the checkpoint itself
            # (build_llava_from_pretrained); this architecture record keeps the short-context rope.
            "max_position_embeddings": 131072,
            "original_max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.75},
            "tie_word_embeddings": True,
            "bos_token_id": 199999,
            "eos_token_id": 199999,
            "pad_token_id": 199999,
        },
        pad_token="<|endoftext|>",
    ),
)
