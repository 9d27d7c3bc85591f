"""Checkpoint folders of backbones outside the study, as params.yaml would declare them by path.

Each holds what a Hub checkpoint holds besides its weights (which a tiny twin does not need): the
published ``config.json`` values and the real tokenizer (llama.cpp's GGUF vocabularies,
``tests/real_tokenizers.py``) or image-processor files.

- ``qwen2.5-0.5b``: Qwen2.5-0.5B-Instruct's architecture with the real Qwen2 tokenizer and its own
  chat template (ChatML).
- ``llama3.2-1b``: Llama-3.2-1B-Instruct's architecture (tied embeddings, llama3 rope with factor 32)
  with the real Llama-3 tokenizer, which ships no chat template: declared with the ``llama3.1`` one.
- ``vit-b-16``: google/vit-base-patch16-224's ViT (model type ``vit``, not one of the study's families).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.real_tokenizers import real_tokenizer

QWEN25_05B = {
    "model_type": "qwen2",
    "architectures": ["Qwen2ForCausalLM"],
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "max_window_layers": 21,
    "sliding_window": 32768,
    "use_sliding_window": False,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}
LLAMA32_1B = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    "rope_theta": 500000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
}
VIT_B16 = {
    "model_type": "vit",
    "architectures": ["ViTForImageClassification"],
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 224,
    "patch_size": 16,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "qkv_bias": True,
}
VIT_PREPROCESSOR = {
    "image_processor_type": "ViTImageProcessor",
    "do_resize": True,
    "size": {"height": 224, "width": 224},
    "resample": 2,
    "do_rescale": True,
    "rescale_factor": 0.00392156862745098,
    "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}
# Published parameter counts (LLM with its embeddings; the encoder without its classifier).
PARAMS = {"qwen2.5-0.5b": 494_032_768, "llama3.2-1b": 1_235_814_400, "vit-b-16": 86_389_248}


def _llm(folder: Path, config: dict, tokenizer: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    real_tokenizer(tokenizer).save_pretrained(folder)
    return folder


def write_checkpoints(root: Path) -> dict[str, Path]:
    """The three checkpoint folders under ``root``; returns id -> folder."""
    vit = root / "vit-b-16"
    vit.mkdir(parents=True, exist_ok=True)
    (vit / "config.json").write_text(json.dumps(VIT_B16, indent=1))
    (vit / "preprocessor_config.json").write_text(json.dumps(VIT_PREPROCESSOR, indent=1))
    return {
        "qwen2.5-0.5b": _llm(root / "qwen2.5-0.5b", QWEN25_05B, "qwen2"),
        "llama3.2-1b": _llm(root / "llama3.2-1b", LLAMA32_1B, "llama-bpe"),
        "vit-b-16": vit,
    }


def backbones_section(folders: dict[str, Path]) -> dict:
    """The params.yaml ``backbones`` section declaring them."""
    return {
        "llm": {
            "qwen2.5-0.5b": {"path": str(folders["qwen2.5-0.5b"])},
            "llama3.2-1b": {
                "path": str(folders["llama3.2-1b"]),
                "template": "llama3.1",
                "system_prompt": "You answer questions about images.",
            },
        },
        "vision": {"vit-b-16": {"path": str(folders["vit-b-16"])}},
    }
