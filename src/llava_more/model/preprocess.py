"""Image preprocessing shared by training, evaluation and chat, so a model sees images one way.

Every image first becomes the RGB picture a viewer shows (``llava_more.data.images.as_rgb``: EXIF
orientation, 16-bit, transparency, CMYK), whoever opened it: our loader or lmms-eval's datasets.

LLaVA-1.5's ``image_aspect_ratio=pad`` centres the image on a square canvas of the image
processor's mean colour before the processor resizes it; ``square`` hands it to the processor as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from llava_more.data.images import as_rgb

ASPECT_RATIOS = ("pad", "square")


def mean_colour(image_processor: Any) -> tuple[int, int, int]:
    """The processor's normalisation mean as an RGB colour (0.5 grey when it has none).

    Truncated, not rounded, as LLaVA computes its padding colour: CLIP's mean is (122, 116, 104).
    """
    mean = getattr(image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
    return tuple(int(255 * m) for m in mean[:3])


def expand_to_square(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Pad the shorter side symmetrically so the image becomes square (content is not resized)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), background)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def pixel_values(
    image_processor: Any, images: Sequence[Image.Image], aspect_ratio: str = "pad"
) -> torch.Tensor:
    """A batch of RGB ``images`` as the model's pixel values, under ``aspect_ratio`` (pad | square)."""
    if aspect_ratio not in ASPECT_RATIOS:
        raise ValueError(f"image_aspect_ratio={aspect_ratio!r}: expected one of {', '.join(ASPECT_RATIOS)}")
    images = [as_rgb(image) for image in images]
    if aspect_ratio == "pad":
        fill = mean_colour(image_processor)
        images = [expand_to_square(image, fill) for image in images]
    return image_processor(images=images, return_tensors="pt")["pixel_values"]
