"""A model bundle: one Hugging Face folder holding the model, tokenizer, image processor and processor,
plus ``llava_more.json`` (``BundleMeta``) saying which backbones, size, S2 scales and template it uses.

Bundles are written atomically (into a temporary folder beside the target, then renamed), so a job
killed mid-save never leaves a half-written model where Snakemake expects a finished one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoImageProcessor,
    AutoModelForImageTextToText,
    AutoTokenizer,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerBase,
)
from transformers.image_processing_utils import BaseImageProcessor

import llava_more.model.llava  # noqa: F401  (registers llava_more with the Auto classes)
from llava_more.errors import UserError
from llava_more.outputs import atomic_dir
from llava_more.text.templates import IMAGE_TOKEN

META_FILE = "llava_more.json"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundleMeta:
    """What a bundle holds. ``image_aspect_ratio`` (pad | square) is how images are prepared for it
    (None: evaluation's default, pad); ``source`` is the published checkpoint an imported bundle
    was converted from (None for bundles built here)."""

    llm_id: str
    vision_id: str
    size: str
    s2_scales: list[int] | None
    template: str
    image_tokens: int
    image_token: str = IMAGE_TOKEN
    image_aspect_ratio: str | None = None
    source: str | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def read(cls, path: Path) -> BundleMeta:
        meta_path = path / META_FILE
        if not meta_path.is_file():
            raise UserError(
                f"{path}: not a llava-more model bundle (no {META_FILE}); "
                "create one with `llava-more init-model` or point at a trained stage's output"
            )
        try:
            raw = json.loads(meta_path.read_text())
            return cls(**raw)
        except (json.JSONDecodeError, TypeError) as err:
            raise UserError(f"{meta_path}: unreadable bundle metadata ({err}); rebuild the bundle") from None


@dataclass(frozen=True)
class Bundle:
    model: LlavaForConditionalGeneration
    tokenizer: PreTrainedTokenizerBase
    image_processor: BaseImageProcessor
    meta: BundleMeta


def llava_processor(
    model: LlavaForConditionalGeneration,
    tokenizer: PreTrainedTokenizerBase,
    image_processor: BaseImageProcessor,
    meta: BundleMeta,
) -> LlavaProcessor:
    """A transformers ``LlavaProcessor`` that expands ``<image>`` into exactly ``meta.image_tokens`` tokens.

    The processor counts tokens as (pixels / patch)^2, adjusted for CLS. For S2 the pixels are the
    largest scale, so the patch it is given is the encoder's patch times the scale ratio; for the
    llava_more class (which drops its prefix tokens itself) no CLS adjustment applies.
    """
    config = model.config
    pixels = meta.s2_scales[-1] if meta.s2_scales else None
    side = int(round(meta.image_tokens**0.5))
    patch = (pixels // side) if pixels else config.vision_config.patch_size
    strategy = config.vision_feature_select_strategy
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=1 if strategy == "default" else 0,
        chat_template=getattr(tokenizer, "chat_template", None),
        image_token=meta.image_token,
    )


def save_bundle(
    out_dir: str | os.PathLike,
    model: LlavaForConditionalGeneration,
    tokenizer: PreTrainedTokenizerBase,
    image_processor: BaseImageProcessor,
    meta: BundleMeta,
) -> None:
    """Write the bundle to ``out_dir`` atomically (replacing an existing one)."""
    with atomic_dir(out_dir, signature=META_FILE) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        image_processor.save_pretrained(staging)
        try:
            llava_processor(model, tokenizer, image_processor, meta).save_pretrained(staging)
        except (ValueError, IndexError, TypeError) as err:  # e.g. a tokenizer without the image token
            logger.warning("no LlavaProcessor saved in %s: %s", out_dir, err)
        (staging / META_FILE).write_text(meta.to_json())


def load_preprocessing(
    path: str | os.PathLike,
) -> tuple[PreTrainedTokenizerBase, BaseImageProcessor, BundleMeta]:
    """A bundle's tokenizer, image processor and metadata, without its weights."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: model bundle folder not found; run the step that creates it first")
    meta = BundleMeta.read(path)
    return AutoTokenizer.from_pretrained(path), AutoImageProcessor.from_pretrained(path), meta


def load_weights(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    quantization_config: Any = None,
) -> LlavaForConditionalGeneration:
    """A bundle's model; ``dtype`` None keeps the saved dtype. A ``quantization_config`` (bitsandbytes, a
    GPU ``device``) loads the weights quantized, placed on ``device`` as they load."""
    if quantization_config is not None:
        return AutoModelForImageTextToText.from_pretrained(
            path, quantization_config=quantization_config, device_map={"": device}
        )
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype if dtype is not None else "auto")
    return model.to(device)


def load_bundle(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    quantization_config: Any = None,
) -> Bundle:
    """Load a bundle (``load_weights`` says what ``dtype`` and ``quantization_config`` do)."""
    tokenizer, image_processor, meta = load_preprocessing(path)
    model = load_weights(path, device, dtype, quantization_config)
    return Bundle(model=model, tokenizer=tokenizer, image_processor=image_processor, meta=meta)
