"""DINOv2 ViT-L/14, with and without 4 registers, run at a 224 px crop (256 patch tokens).

The checkpoints declare 518 px position embeddings and interpolate them to the input; the
registers variant puts CLS + 4 register tokens before the patches, all dropped before the projector.
"""

from __future__ import annotations

from llava_more.model.vision.base import Preprocessing, VisionSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_LARGE = {
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
# Resize the short side to 256 then crop 224 (tiny: 56 -> 48).
_PREPROCESSING = Preprocessing(
    "BitImageProcessor", IMAGENET_MEAN, IMAGENET_STD, crop=True, resize={"real": 256, "tiny": 56}
)
_TINY = {"mlp_ratio": 2}

SPECS = (
    VisionSpec(
        id="dinov2-l-224",
        hf_id="facebook/dinov2-large",
        family="dinov2",
        config_class_name="Dinov2Config",
        model_class_name="Dinov2Model",
        real=_LARGE,
        tiny=_TINY,
        real_image_size=224,
        num_prefix_tokens=1,
        preprocessing=_PREPROCESSING,
    ),
    VisionSpec(
        id="dinov2-l-reg-224",
        hf_id="facebook/dinov2-with-registers-large",
        family="dinov2_with_registers",
        config_class_name="Dinov2WithRegistersConfig",
        model_class_name="Dinov2WithRegistersModel",
        real={**_LARGE, "num_register_tokens": 4},
        tiny=_TINY,
        real_image_size=224,
        num_prefix_tokens=5,
        preprocessing=_PREPROCESSING,
    ),
)
