"""The model layer: backbone registries, the LLaVA model (plain or S2/register-aware), building and bundles.

The registries (``get_llm``, ``get_vision``, specs) import without torch, so validating params.yaml
stays fast; everything else is imported on first use. Using any of those (or importing
``llava_more.model.llava``) registers the ``llava_more`` model type with transformers' Auto classes.
"""

from __future__ import annotations

import importlib
from typing import Any

from llava_more.model.llm import LLMSpec, get_llm, list_llms
from llava_more.model.vision import VisionSpec, get_vision, list_visions

# Public name -> the module that defines it (imported with torch and transformers on first access).
_HEAVY = {
    "build_llava": "llava_more.model.builder",
    "build_llava_from_pretrained": "llava_more.model.builder",
    "Bundle": "llava_more.model.bundle",
    "BundleMeta": "llava_more.model.bundle",
    "load_bundle": "llava_more.model.bundle",
    "save_bundle": "llava_more.model.bundle",
    "freeze_for_stage": "llava_more.model.freezing",
    "LlavaMoreConfig": "llava_more.model.llava",
    "LlavaMoreForConditionalGeneration": "llava_more.model.llava",
    "describe_model": "llava_more.model.describe",
    "init_model": "llava_more.model.initialize",
}


def __getattr__(name: str) -> Any:
    if name in _HEAVY:
        return getattr(importlib.import_module(_HEAVY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_HEAVY])


__all__ = ["LLMSpec", "VisionSpec", "get_llm", "get_vision", "list_llms", "list_visions", *_HEAVY]
