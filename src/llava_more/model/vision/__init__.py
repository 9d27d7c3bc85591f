"""The vision encoder registry: the built-in encoders (one small file per family) and those declared in params.yaml."""

from __future__ import annotations

from llava_more.errors import UnknownBackboneError
from llava_more.model.vision import clip, dinov2, siglip
from llava_more.model.vision.base import VisionSpec

_BUILTIN: dict[str, VisionSpec] = {
    spec.id: spec for module in (clip, siglip, dinov2) for spec in module.SPECS
}


def builtin_visions() -> dict[str, VisionSpec]:
    return dict(_BUILTIN)


def get_vision(vision_id: str) -> VisionSpec:
    """The spec of ``vision_id`` (built-in or declared); unknown ids raise ``UnknownBackboneError``."""
    from llava_more.model.declarations import declared

    if vision_id in _BUILTIN:
        return _BUILTIN[vision_id]
    visions = declared().visions
    if vision_id in visions:
        return visions[vision_id]
    raise UnknownBackboneError("vision encoder", vision_id, list_visions())


def list_visions() -> list[str]:
    """Built-in ids, then declared ones."""
    from llava_more.model.declarations import declared

    return [*_BUILTIN, *declared().visions]


__all__ = ["VisionSpec", "builtin_visions", "get_vision", "list_visions"]
