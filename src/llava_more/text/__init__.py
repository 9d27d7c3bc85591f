"""Chat templates, the locally trained demo tokenizer and loss masks.

Public API (see docs/ARCHITECTURE.md): ``IMAGE_TOKEN``, ``get_template``, ``train_demo_tokenizer``,
``apply_template``, ``encode_conversation``, ``generation_prompt``; ``encode_prompt`` (generation
prompts as token ids, for inference); ``audit`` (the loss-mask audit before training).
"""

from llava_more.text.encode import (
    IGNORE_INDEX,
    EncodedPrompt,
    SampleTooLong,
    encode_conversation,
    encode_prompt,
    generation_prompt,
    resolve_template,
)
from llava_more.text.render import RenderedConversation, render_conversation, to_messages
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
from llava_more.text.tokenizer import apply_template, train_demo_tokenizer

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_TOKEN",
    "NO_SYSTEM_SUFFIX",
    "ORIGINAL_SUFFIX",
    "TEMPLATE_IDS",
    "TOKENIZER_TEMPLATE_ID",
    "ChatTemplate",
    "EncodedPrompt",
    "RenderedConversation",
    "SampleTooLong",
    "apply_template",
    "encode_conversation",
    "encode_prompt",
    "generation_prompt",
    "get_template",
    "render_conversation",
    "resolve_template",
    "to_messages",
    "train_demo_tokenizer",
    "without_system",
]
