"""Chat templates, the locally trained demo tokenizer, loss masks and generation prompts.

The template registry (``llava_more.text.templates``) imports without transformers, so validating
params.yaml stays fast, and its names are the package's. The rest is imported from the module that
defines it: ``text.encode`` (``encode_conversation``, ``encode_prompt``, ``generation_prompt``,
``IGNORE_INDEX``), ``text.render``, ``text.tokenizer`` (``train_demo_tokenizer``,
``apply_template``), ``text.audit`` (the loss-mask audit before training).
"""

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

__all__ = [
    "IMAGE_TOKEN",
    "NO_SYSTEM_SUFFIX",
    "ORIGINAL_SUFFIX",
    "TEMPLATE_IDS",
    "TOKENIZER_TEMPLATE_ID",
    "ChatTemplate",
    "get_template",
    "without_system",
]
