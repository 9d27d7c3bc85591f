"""DINOv2 ViT-L/14, with and without 4 registers, run at a 224 px crop (256 patch tokens).

The checkpoints declare 518 px position embeddings and interpolate them to the input; the
registers variant puts CLS + 4 register tokens before the patches, all dropped before the projector.
"""

from __future__ import annotations

from llava_more.model.vision.base import VisionSpec, preprocessor_values

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_LARGE = {
    "model_type": "dinov2",
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "mlp_ratio": 4,
    "image_size": 518,
    "patch_size": 14,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-6,
    "layerscale_value": 1.0,
    "use_swiglu_ffn": False,
}
# Resize the short side to 256 then crop 224 (the tiny twin: 56 then 48).
_PREPROCESSING = preprocessor_values(
    "BitImageProcessor", IMAGENET_MEAN, IMAGENET_STD, side=224, crop=True, short_side=256
)
_TINY_RESIZE = 56

SPECS = (
    VisionSpec(
        id="dinov2-l-224",
        hf_id="facebook/dinov2-large",
        checkpoint_config=_LARGE,
        checkpoint_preprocessing=_PREPROCESSING,
        tiny_resize=_TINY_RESIZE,
    ),
    VisionSpec(
        id="dinov2-l-reg-224",
        hf_id="facebook/dinov2-with-registers-large",
        checkpoint_config={**_LARGE, "model_type": "dinov2_with_registers", "num_register_tokens": 4},
        checkpoint_preprocessing=_PREPROCESSING,
        tiny_resize=_TINY_RESIZE,
    ),
)
