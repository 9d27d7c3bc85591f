"""S2 (Scaling on Scales): multi-scale features from any fixed-resolution vision encoder.

The image arrives at the largest scale. For each scale it is resized, cut into n x n tiles of the
encoder's own input size, every tile is encoded (features from the chosen hidden layer, prefix
tokens such as CLS/registers dropped), the tiles are stitched back into one feature map per scale,
each map is area-pooled to the base grid, and the maps are concatenated on channels: the same
token count as one pass at the base size, ``len(scales)`` times the channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from llava_more.model.s2_scales import validate_s2_scales

__all__ = ["s2_features", "validate_s2_scales"]


def _tiles(images: torch.Tensor, scale: int, base_size: int, antialias: bool = True) -> torch.Tensor:
    """(B, C, S, S) -> (B * n * n, C, base, base), tiles in row-major order per image."""
    if images.shape[-1] != scale or images.shape[-2] != scale:
        # Antialiasing matters when shrinking the largest-scale input to the smaller scales; the
        # antialiased kernel has no bf16/fp16 version, so resize in fp32 and cast back.
        images = F.interpolate(
            images.float(), size=(scale, scale), mode="bicubic", align_corners=False, antialias=antialias
        ).to(images.dtype)
    n = scale // base_size
    batch, channels = images.shape[:2]
    tiles = images.reshape(batch, channels, n, base_size, n, base_size).permute(0, 2, 4, 1, 3, 5)
    return tiles.reshape(batch * n * n, channels, base_size, base_size)


def _stitch_and_pool(features: torch.Tensor, batch: int, n: int, grid: int) -> torch.Tensor:
    """(B * n * n, grid * grid, D) tile features -> (B, grid * grid, D) pooled map."""
    dim = features.shape[-1]
    fmap = features.reshape(batch, n, n, grid, grid, dim).permute(0, 5, 1, 3, 2, 4)
    fmap = fmap.reshape(batch, dim, n * grid, n * grid)
    if n > 1:
        fmap = F.adaptive_avg_pool2d(fmap, grid)  # "area" pooling: exact n x n means
    return fmap.flatten(2).transpose(1, 2)


def s2_features(
    vision_tower: nn.Module,
    pixel_values: torch.Tensor,
    scales: Sequence[int],
    *,
    feature_layer: int,
    num_prefix_tokens: int,
    antialias: bool = True,
) -> torch.Tensor:
    """Multi-scale features of ``pixel_values`` (B, 3, max(scales), max(scales)): (B, N, D * len(scales)).

    All tiles of all scales go through the encoder in one batch (1 + 4 + 9 = 14 passes per image for
    three scales), which is what keeps S2 affordable. ``antialias=False`` shrinks the input to the
    smaller scales with plain bicubic interpolation, as the S2 reference implementation (``s2wrapper``)
    that the published S2 checkpoints were trained with does.
    """
    base_size = scales[0]
    batch = pixel_values.shape[0]
    tiles = torch.cat([_tiles(pixel_values, scale, base_size, antialias) for scale in scales])
    hidden = vision_tower(tiles, output_hidden_states=True, return_dict=True).hidden_states[feature_layer]
    hidden = hidden[:, num_prefix_tokens:]
    grid = int(round(hidden.shape[1] ** 0.5))
    if grid * grid != hidden.shape[1]:
        raise ValueError(f"encoder returned {hidden.shape[1]} patch tokens per tile, not a square grid")
    maps, start = [], 0
    for scale in scales:
        n = scale // base_size
        count = batch * n * n
        maps.append(_stitch_and_pool(hidden[start : start + count], batch, n, grid))
        start += count
    return torch.cat(maps, dim=-1)
