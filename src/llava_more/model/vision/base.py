"""What llava-more knows about one vision encoder: checkpoint, architecture, token geometry, preprocessing.

Every encoder, built-in or declared in params.yaml (``backbones.vision``), is one ``VisionSpec``: a
checkpoint plus the few choices llava-more makes about it (the feature layer, how many prefix tokens
to drop, the input size). Architecture and preprocessing are the checkpoint's own ``config.json`` (the
vision part of a full CLIP/SigLIP checkpoint) and ``preprocessor_config.json``: a built-in entry
carries those values, a declared one reads them from the checkpoint when first needed.

``image_size`` is the encoder's input (after preprocessing), which is not always the config's
``image_size``: DINOv2 checkpoints declare 518 px positions and are run at a 224 px crop. Prefix tokens
(CLS, registers, distillation tokens) are what the encoder puts before the patches; unless declared,
their count is found by running the tiny twin once. Tiny twins shrink the real config by one rule for
every family (``tiny_vision_values``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from llava_more.errors import ConfigError
from llava_more.model.llm.base import (
    check_size,
    config_from_values,
    read_checkpoint_config,
    transformers_class,
)
from llava_more.model.s2_scales import validate_s2_scales

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel
    from transformers.image_processing_utils import BaseImageProcessor

# The tiny twin's trunk; a family's own width fields are shrunk too (TINY_WIDTHS).
TINY_IMAGE_SIZE = 48
TINY_PATCH_SIZE = 8
TINY_TRUNK: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": TINY_IMAGE_SIZE,
    "patch_size": TINY_PATCH_SIZE,
}
TINY_WIDTHS: dict[str, Any] = {"intermediate_size": 128, "projection_dim": 32, "mlp_ratio": 2}

# LLaVA-1.5 takes features from the encoder's second-to-last layer.
DEFAULT_FEATURE_LAYER = -2
# S2 with three scales, as in the study (CLIP 336/672/1008, SigLIP 384/768/1152).
DEFAULT_S2_MULTIPLES = (1, 2, 3)


def tiny_vision_values(real: PretrainedConfig) -> dict[str, Any]:
    """The config values of the vision config ``real``'s tiny twin."""
    values = real.to_dict()
    values.update(TINY_TRUNK)
    values.update({key: value for key, value in TINY_WIDTHS.items() if key in values})
    # Derived from the layer count (backbone stage names), or bookkeeping: the shrunk config derives them anew.
    for derived in (
        "_name_or_path", "architectures", "transformers_version", "dtype", "torch_dtype",
        "stage_names", "out_features", "out_indices", "_out_features", "_out_indices",
    ):  # fmt: skip
        values.pop(derived, None)
    return values


def preprocessor_values(
    processor: str,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    side: int,
    crop: bool,
    short_side: int | None = None,
) -> dict[str, Any]:
    """``preprocessor_config.json`` values of the usual kind: bicubic resize (then a center crop of
    ``side`` after resizing the short side to ``short_side``, or straight to ``side`` x ``side``),
    rescale to [0, 1], normalise."""
    values: dict[str, Any] = {
        "image_processor_type": processor,
        "do_resize": True,
        "resample": 3,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(mean),
        "image_std": list(std),
        "do_convert_rgb": True,
        "do_center_crop": crop,
    }
    if crop:
        values.update(size={"shortest_edge": short_side or side}, crop_size={"height": side, "width": side})
    else:
        values["size"] = {"height": side, "width": side}
    return values


def _side(size: Any) -> int | None:
    """Pixels per side of an image-processor ``size`` / ``crop_size`` value."""
    if isinstance(size, int):
        return size
    if isinstance(size, dict):
        return size.get("height") or size.get("shortest_edge")
    return None


@dataclass(frozen=True, eq=False)
class VisionSpec:
    """One vision encoder.

    ``hf_id`` / ``path``: the checkpoint (a local ``path`` wins). ``feature_layer``: the hidden layer the
    projector reads. ``prefix_tokens``: non-patch tokens to drop (None: found from the architecture).
    ``input_size``: pixels per side the encoder runs at (None: the checkpoint's preprocessing).
    ``checkpoint_config`` / ``checkpoint_preprocessing``: the checkpoint's ``config.json`` (vision part)
    and ``preprocessor_config.json`` values when known without reading them (the built-ins).
    ``tiny_resize``: the tiny twin's short side before its center crop (None: scaled from the real one).
    """

    id: str
    hf_id: str | None = None
    path: str | None = None
    feature_layer: int = DEFAULT_FEATURE_LAYER
    prefix_tokens: int | None = None
    input_size: int | None = None
    checkpoint_config: dict[str, Any] | None = None
    checkpoint_preprocessing: dict[str, Any] | None = None
    tiny_resize: int | None = None
    declared: bool = False

    @property
    def source(self) -> str:
        return self.path or self.hf_id or ""

    @cached_property
    def real(self) -> dict[str, Any]:
        """The checkpoint's ``config.json`` values (for an encoder: its vision part)."""
        if self.checkpoint_config is not None:
            return dict(self.checkpoint_config)
        values = read_checkpoint_config(self.source, f"vision encoder {self.id!r}")
        vision = values.get("vision_config")  # a full CLIP / SigLIP checkpoint: its vision tower
        return dict(vision) if isinstance(vision, dict) and "model_type" in vision else values

    @cached_property
    def preprocessing(self) -> dict[str, Any]:
        """The checkpoint's image-processor values (``preprocessor_config.json``)."""
        if self.checkpoint_preprocessing is not None:
            return dict(self.checkpoint_preprocessing)
        from transformers import AutoImageProcessor

        try:
            return AutoImageProcessor.from_pretrained(self.source).to_dict()
        except (OSError, ValueError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(
                f"vision encoder {self.id!r}: cannot read the image processor of {self.source!r} ({reason}); "
                "a checkpoint needs its preprocessor_config.json"
            ) from None

    @property
    def family(self) -> str:
        """The transformers ``model_type`` of the tower."""
        return self.real["model_type"]

    @property
    def config_class(self) -> type[PretrainedConfig]:
        return type(config_from_values(self.real))

    @property
    def model_class(self) -> type[PreTrainedModel]:
        """The tower's transformers class (loads vision-only weights from a full CLIP/SigLIP checkpoint)."""
        from transformers import AutoModel

        try:
            return AutoModel._model_mapping[self.config_class]
        except KeyError:
            raise ConfigError(
                f"vision encoder {self.id!r}: transformers has no vision model for {self.family!r}"
            ) from None

    def config(self, size: str) -> PretrainedConfig:
        real = config_from_values(self.real)
        if check_size(size) == "real":
            return real
        return config_from_values({"model_type": self.family, **tiny_vision_values(real)})

    def image_size(self, size: str) -> int:
        """Pixels per side of one encoder input."""
        if check_size(size) == "tiny":
            return TINY_IMAGE_SIZE
        if self.input_size is not None:
            return self.input_size
        recipe = self.preprocessing
        side = _side(recipe.get("crop_size")) if recipe.get("do_center_crop") else _side(recipe.get("size"))
        return side or int(self.config("real").image_size)

    def patch_size(self, size: str) -> int:
        return int(self.config(size).patch_size)

    def image_tokens(self, size: str) -> int:
        """Visual tokens per image handed to the LLM (S2 keeps the same count)."""
        return (self.image_size(size) // self.patch_size(size)) ** 2

    def hidden_size(self, size: str) -> int:
        return self.config(size).hidden_size

    @cached_property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches (dropped before the projector): declared, or counted on the tiny twin."""
        if self.prefix_tokens is not None:
            return self.prefix_tokens
        import torch

        tower = self.model_class(self.config("tiny")).eval()
        with torch.no_grad():
            pixels = torch.zeros(1, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
            states = tower(pixels, output_hidden_states=True).hidden_states[-1]
        return int(states.shape[1]) - (TINY_IMAGE_SIZE // TINY_PATCH_SIZE) ** 2

    def s2_scales(self, size: str, scales: Sequence[int] | None = None) -> tuple[int, ...]:
        """``scales`` validated for this encoder, or the default three scales when None."""
        base = self.image_size(size)
        if scales is None:
            return tuple(base * k for k in DEFAULT_S2_MULTIPLES)
        return validate_s2_scales(scales, base, self.id)

    def image_processor(self, size: str, s2_scales: Sequence[int] | None = None) -> BaseImageProcessor:
        """The checkpoint's preprocessing at this size; with S2 it produces the largest scale."""
        from transformers.utils import is_torchvision_available

        base = self.image_size(size)
        target = self.s2_scales(size, s2_scales)[-1] if s2_scales is not None else base
        values = self.preprocessing
        name = values.get("image_processor_type") or "CLIPImageProcessor"
        name = name.removesuffix("Fast").removesuffix("Pil")
        if not is_torchvision_available():
            name += "Pil"
        processor_class = transformers_class(name)
        values = {k: v for k, v in values.items() if k not in ("image_processor_type", "processor_class")}
        if values.get("do_center_crop"):
            real_base = self.image_size("real")
            real_short = _side(values.get("size")) or real_base
            short = (
                self.tiny_resize
                if size == "tiny" and self.tiny_resize
                else round(real_short * base / real_base)
            )
            values["size"] = {"shortest_edge": short * target // base}
            values["crop_size"] = {"height": target, "width": target}
        else:
            values["size"] = {"height": target, "width": target}
            values["do_center_crop"] = False
        return processor_class(**values)
