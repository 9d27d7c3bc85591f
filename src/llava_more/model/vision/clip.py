"""CLIP ViT-L/14 at 336 px: LLaVA-1.5's encoder (576 patch tokens after dropping CLS)."""

from __future__ import annotations

from llava_more.model.vision.base import VisionSpec, preprocessor_values

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

SPECS = (
    VisionSpec(
        id="clip-l-336",
        hf_id="openai/clip-vit-large-patch14-336",
        checkpoint_config={
            "model_type": "clip_vision_model",
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 336,
            "patch_size": 14,
            "projection_dim": 768,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
        },
        checkpoint_preprocessing=preprocessor_values(
            "CLIPImageProcessor", OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, side=336, crop=True
        ),
    ),
)
