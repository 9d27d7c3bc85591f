"""Data: the demo world, demo datasets in the LLaVA layout, the LLaVA-JSON loader and validation.

Names are imported lazily so that ``import llava_more.data.demo_world`` (used by the benchmark
builder) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "generate_demo_pretrain": "llava_more.data.demo_pretrain",
    "generate_demo_instruct": "llava_more.data.demo_instruct",
    "validate_dataset": "llava_more.data.validate",
    "ValidationReport": "llava_more.data.validate",
    "LlavaJsonDataset": "llava_more.data.llava_json",
    "read_records": "llava_more.data.llava_json",
    "open_image": "llava_more.data.llava_json",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'llava_more.data' has no attribute {name!r}")
