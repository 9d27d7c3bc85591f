"""Which S2 scales an encoder accepts (torch-free: params.yaml validation uses it)."""

from __future__ import annotations

from collections.abc import Sequence

from llava_more.errors import ConfigError


def validate_s2_scales(scales: Sequence[int], base_size: int, encoder: str) -> tuple[int, ...]:
    """Return ``scales`` as a tuple, or raise ``ConfigError`` naming the first bad scale.

    The first scale must be the encoder's input size, the others multiples of it (each tile is one
    encoder pass at its native resolution: SigLIP's position embeddings cannot be interpolated),
    strictly increasing.
    """
    scales = tuple(scales)
    fix = f"S2 scales for {encoder} must start at {base_size} and be increasing multiples of it, e.g. " + (
        f"[{base_size}, {2 * base_size}, {3 * base_size}]"
    )
    if not scales:
        raise ConfigError(f"empty S2 scale list; {fix}")
    for index, scale in enumerate(scales):
        if isinstance(scale, bool) or not isinstance(scale, int) or scale <= 0:
            raise ConfigError(f"S2 scale {scale!r} is not a positive integer; {fix}")
        if index == 0 and scale != base_size:
            raise ConfigError(f"first S2 scale {scale} is not the encoder's input size {base_size}; {fix}")
        if scale % base_size:
            raise ConfigError(f"S2 scale {scale} is not a multiple of {base_size}; {fix}")
        if index and scale <= scales[index - 1]:
            raise ConfigError(f"S2 scale {scale} does not increase after {scales[index - 1]}; {fix}")
    return scales
