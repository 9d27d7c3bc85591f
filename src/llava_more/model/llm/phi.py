"""Phi-2 (the LLaVA-Phi baseline): parallel attention/MLP blocks, partial rotary 0.4, biased LM head."""

from __future__ import annotations

from llava_more.model.llm.base import LLMSpec

SPECS = (
    LLMSpec(
        id="phi-2",
        hf_id="microsoft/phi-2",
        template="phi2",
        checkpoint_config={
            "model_type": "phi",
            "vocab_size": 51200,
            "hidden_size": 2560,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "intermediate_size": 10240,
            "hidden_act": "gelu_new",
            "layer_norm_eps": 1e-5,
            "max_position_embeddings": 2048,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.4},
            "resid_pdrop": 0.1,
            "tie_word_embeddings": False,
            "bos_token_id": 50256,
            "eos_token_id": 50256,
        },
    ),
)
