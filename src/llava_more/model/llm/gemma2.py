"""Gemma-2 LLMs (2B and 9B instruction-tuned): wide 256-d heads, logit soft-capping, tied embeddings."""

from __future__ import annotations

from llava_more.model.llm.base import LLMSpec

_GEMMA2 = {
    "vocab_size": 256000,
    "head_dim": 256,
    "query_pre_attn_scalar": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 8192,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
    "sliding_window": 4096,
    "attn_logit_softcapping": 50.0,
    "final_logit_softcapping": 30.0,
    "tie_word_embeddings": True,
    "bos_token_id": 2,
    "eos_token_id": 1,
    "pad_token_id": 0,
}

SPECS = (
    LLMSpec(
        id="gemma2-2b",
        hf_id="google/gemma-2-2b-it",
        template="gemma2",
        checkpoint_config={
            "model_type": "gemma2",
            **_GEMMA2,
            "hidden_size": 2304,
            "num_hidden_layers": 26,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "intermediate_size": 9216,
        },
        pad_token="<pad>",
    ),
    LLMSpec(
        id="gemma2-9b",
        hf_id="google/gemma-2-9b-it",
        template="gemma2",
        checkpoint_config={
            "model_type": "gemma2",
            **_GEMMA2,
            "hidden_size": 3584,
            "num_hidden_layers": 42,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "intermediate_size": 14336,
        },
        pad_token="<pad>",
    ),
)
