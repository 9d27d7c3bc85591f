"""What llava-more knows about one vision encoder: checkpoint, architecture, token geometry, preprocessing.

``image_size`` is the encoder's input (after preprocessing), which is not always the config's
``image_size``: DINOv2 checkpoints declare 518 px positions and are run at a 224 px crop.
``num_prefix_tokens`` counts the non-patch tokens the encoder puts first (CLS, registers), which
are dropped before the projector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llava_more.model.llm.base import check_size, transformers_class
from llava_more.model.s2_scales import validate_s2_scales

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel
    from transformers.image_processing_utils import BaseImageProcessor

# The tiny twin's trunk; a family adds its own field names on top.
TINY_IMAGE_SIZE = 48
TINY_PATCH_SIZE = 8
TINY_TRUNK: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": TINY_IMAGE_SIZE,
    "patch_size": TINY_PATCH_SIZE,
}

# S2 with three scales, as in the study (CLIP 336/672/1008, SigLIP 384/768/1152).
DEFAULT_S2_MULTIPLES = (1, 2, 3)


@dataclass(frozen=True)
class Preprocessing:
    """The checkpoint's own image preprocessing.

    ``processor`` names transformers' image processor class (its PIL variant is used when
    torchvision is missing). ``crop`` true means resize the short side then center-crop a square;
    false means resize straight to a square. ``resize`` maps size -> short side before the crop
    (defaults to the crop size).
    """

    processor: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop: bool
    resize: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class VisionSpec:
    """One vision encoder. ``family`` is the transformers ``model_type`` of the tower; the
    ``*_class_name`` fields name its transformers config and model classes."""

    id: str
    hf_id: str
    family: str
    config_class_name: str
    model_class_name: str
    real: dict[str, Any]
    tiny: dict[str, Any]
    real_image_size: int
    num_prefix_tokens: int
    preprocessing: Preprocessing

    @property
    def config_class(self) -> type[PretrainedConfig]:
        return transformers_class(self.config_class_name)

    @property
    def model_class(self) -> type[PreTrainedModel]:
        """The tower's transformers class (loads vision-only weights from a full CLIP/SigLIP checkpoint)."""
        return transformers_class(self.model_class_name)

    def config(self, size: str) -> PretrainedConfig:
        if check_size(size) == "real":
            return self.config_class(**self.real)
        return self.config_class(**{**self.real, **TINY_TRUNK, **self.tiny})

    def image_size(self, size: str) -> int:
        """Pixels per side of one encoder input."""
        return self.real_image_size if check_size(size) == "real" else TINY_IMAGE_SIZE

    def patch_size(self, size: str) -> int:
        return self.real["patch_size"] if check_size(size) == "real" else TINY_PATCH_SIZE

    def image_tokens(self, size: str) -> int:
        """Visual tokens per image handed to the LLM (S2 keeps the same count)."""
        return (self.image_size(size) // self.patch_size(size)) ** 2

    def hidden_size(self, size: str) -> int:
        return self.config(size).hidden_size

    def s2_scales(self, size: str, scales: Sequence[int] | None = None) -> tuple[int, ...]:
        """``scales`` validated for this encoder, or the default three scales when None."""
        base = self.image_size(size)
        if scales is None:
            return tuple(base * k for k in DEFAULT_S2_MULTIPLES)
        return validate_s2_scales(scales, base, self.id)

    def image_processor(self, size: str, s2_scales: Sequence[int] | None = None) -> BaseImageProcessor:
        """The checkpoint's preprocessing at this size; with S2 it produces the largest scale."""
        base = self.image_size(size)
        target = self.s2_scales(size, s2_scales)[-1] if s2_scales is not None else base
        recipe = self.preprocessing
        from transformers.utils import is_torchvision_available

        name = recipe.processor if is_torchvision_available() else recipe.processor + "Pil"
        processor_class = transformers_class(name)
        common = {
            "do_resize": True,
            "resample": 3,  # bicubic, as every one of these checkpoints
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": list(recipe.mean),
            "image_std": list(recipe.std),
            "do_convert_rgb": True,
        }
        if recipe.crop:
            short_side = recipe.resize.get(size, base) * target // base
            return processor_class(
                **common,
                size={"shortest_edge": short_side},
                do_center_crop=True,
                crop_size={"height": target, "width": target},
            )
        return processor_class(**common, size={"height": target, "width": target}, do_center_crop=False)
