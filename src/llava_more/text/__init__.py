"""Chat templates, the locally trained demo tokenizer and loss masks.

Public API (see docs/ARCHITECTURE.md): ``IMAGE_TOKEN``, ``get_template``, ``train_demo_tokenizer``,
``apply_template``, ``encode_conversation``, ``generation_prompt``; ``encode_prompt`` (generation
prompts as token ids, for inference); ``audit`` (the loss-mask audit before training).

The template registry (``llava_more.text.templates``) imports without transformers, so validating
params.yaml stays fast; the names below are imported from their modules on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from llava_more.text.templates import (
    IMAGE_TOKEN,
    NO_SYSTEM_SUFFIX,
    ORIGINAL_SUFFIX,
    TEMPLATE_IDS,
    TOKENIZER_TEMPLATE_ID,
    ChatTemplate,
    get_template,
    without_system,
)

# Public name -> the module that defines it (imported with transformers on first access).
_HEAVY = {
    "IGNORE_INDEX": "llava_more.text.encode",
    "EncodedPrompt": "llava_more.text.encode",
    "SampleTooLong": "llava_more.text.encode",
    "encode_conversation": "llava_more.text.encode",
    "encode_prompt": "llava_more.text.encode",
    "generation_prompt": "llava_more.text.encode",
    "resolve_template": "llava_more.text.encode",
    "RenderedConversation": "llava_more.text.render",
    "render_conversation": "llava_more.text.render",
    "to_messages": "llava_more.text.render",
    "apply_template": "llava_more.text.tokenizer",
    "train_demo_tokenizer": "llava_more.text.tokenizer",
}


def __getattr__(name: str) -> Any:
    if name in _HEAVY:
        return getattr(importlib.import_module(_HEAVY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_HEAVY])


__all__ = [
    "IMAGE_TOKEN",
    "NO_SYSTEM_SUFFIX",
    "ORIGINAL_SUFFIX",
    "TEMPLATE_IDS",
    "TOKENIZER_TEMPLATE_ID",
    "ChatTemplate",
    "get_template",
    "without_system",
    *_HEAVY,
]
