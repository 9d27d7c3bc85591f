"""Chat templates, the locally trained demo tokenizer and loss masks.

Public API (see docs/ARCHITECTURE.md): ``IMAGE_TOKEN``, ``get_template``, ``train_demo_tokenizer``,
``apply_template``, ``encode_conversation``, ``generation_prompt``.
"""

from llava_more.text.encode import (
    IGNORE_INDEX,
    RenderedConversation,
    SampleTooLong,
    encode_conversation,
    generation_prompt,
    render_conversation,
    to_messages,
)
from llava_more.text.templates import (
    IMAGE_TOKEN,
    NO_SYSTEM_SUFFIX,
    ORIGINAL_SUFFIX,
    TEMPLATE_IDS,
    ChatTemplate,
    get_template,
    without_system,
)
from llava_more.text.tokenizer import apply_template, train_demo_tokenizer

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_TOKEN",
    "NO_SYSTEM_SUFFIX",
    "ORIGINAL_SUFFIX",
    "TEMPLATE_IDS",
    "ChatTemplate",
    "RenderedConversation",
    "SampleTooLong",
    "apply_template",
    "encode_conversation",
    "generation_prompt",
    "get_template",
    "render_conversation",
    "to_messages",
    "train_demo_tokenizer",
    "without_system",
]
