"""SigLIP and SigLIP2 so400m/14 at 384 px (729 tokens, no CLS).

The fixed-resolution SigLIP2 checkpoint is published as a plain ``siglip`` model, so both use
``SiglipVisionModel`` (the Siglip2 classes are for the NaFlex variants and need inputs LLaVA does
not pass).
"""

from __future__ import annotations

from llava_more.model.vision.base import VisionSpec, preprocessor_values

_SO400M = {
    "model_type": "siglip_vision_model",
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "image_size": 384,
    "patch_size": 14,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "vision_use_head": True,
}
_PREPROCESSING = preprocessor_values(
    "SiglipImageProcessor", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), side=384, crop=False
)


def _so400m(spec_id: str, hf_id: str) -> VisionSpec:
    return VisionSpec(
        id=spec_id, hf_id=hf_id, checkpoint_config=_SO400M, checkpoint_preprocessing=_PREPROCESSING
    )


SPECS = (
    _so400m("siglip-so400m-384", "google/siglip-so400m-patch14-384"),
    _so400m("siglip2-so400m-384", "google/siglip2-so400m-patch14-384"),
)
