"""The vision encoder registry: ``get_vision(id)`` and ``list_visions()`` over the per-family spec files."""

from __future__ import annotations

from llava_more.errors import UnknownBackboneError
from llava_more.model.vision import clip, dinov2, siglip
from llava_more.model.vision.base import VisionSpec

_REGISTRY: dict[str, VisionSpec] = {
    spec.id: spec for module in (clip, siglip, dinov2) for spec in module.SPECS
}


def get_vision(vision_id: str) -> VisionSpec:
    """The spec of ``vision_id``; unknown ids raise ``UnknownBackboneError`` listing the valid ones."""
    try:
        return _REGISTRY[vision_id]
    except KeyError:
        raise UnknownBackboneError("vision encoder", vision_id, list(_REGISTRY)) from None


def list_visions() -> list[str]:
    return list(_REGISTRY)


__all__ = ["VisionSpec", "get_vision", "list_visions"]
