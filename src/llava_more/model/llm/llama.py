"""Llama-architecture LLMs: Llama-3.1 / Llama-3 8B Instruct, DeepSeek-R1-Distill-Llama-8B, Vicuna-7B-v1.5."""

from __future__ import annotations

from llava_more.model.llm.base import LLMSpec

# Llama-3.1's long-context rope (also inherited by the R1 distill, which starts from Llama-3.1-8B).
_LLAMA31_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}

_LLAMA3_8B = {
    "vocab_size": 128256,
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 14336,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "bos_token_id": 128000,
}

SPECS = (
    LLMSpec(
        id="llama3.1-8b",
        hf_id="meta-llama/Llama-3.1-8B-Instruct",
        template="llama3.1",
        checkpoint_config={
            "model_type": "llama",
            **_LLAMA3_8B,
            "max_position_embeddings": 131072,
            "rope_parameters": _LLAMA31_ROPE,
            "eos_token_id": [128001, 128008, 128009],
        },
        pad_token="<|finetune_right_pad_id|>",
    ),
    LLMSpec(
        id="deepseek-r1-distill-llama-8b",
        hf_id="deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
        template="deepseek_r1",
        checkpoint_config={
            "model_type": "llama",
            **_LLAMA3_8B,
            "max_position_embeddings": 131072,
            "rope_parameters": _LLAMA31_ROPE,
            "eos_token_id": 128001,
        },
    ),
    LLMSpec(
        id="llama3-8b",
        hf_id="meta-llama/Meta-Llama-3-8B-Instruct",
        template="llama3",
        checkpoint_config={
            "model_type": "llama",
            **_LLAMA3_8B,
            "max_position_embeddings": 8192,
            "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
            "eos_token_id": 128009,
        },
    ),
    LLMSpec(
        id="vicuna-7b-v1.5",
        hf_id="lmsys/vicuna-7b-v1.5",
        template="vicuna_v1",
        checkpoint_config={
            "model_type": "llama",
            "vocab_size": 32000,
            "hidden_size": 4096,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "intermediate_size": 11008,
            "hidden_act": "silu",
            "rms_norm_eps": 1e-5,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
            "tie_word_embeddings": False,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
        },
    ),
)
