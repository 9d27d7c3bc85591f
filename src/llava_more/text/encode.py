"""Turn a LLaVA conversation into ``input_ids`` + ``labels`` (the loss mask), and build generation prompts.

The mask comes from the rendered template: transformers' ``{% generation %}`` tracker records the
character span of every assistant reply (plus its end-of-turn token), and a token is supervised when its
character offsets fall in such a span. Before a sample is returned we check that there is one span per
reply, that each span holds its reply, and that at least one token is supervised: a broken template
raises instead of silently training on nothing (the reference project's Llama-3.1 bug).

Labels are not shifted (the model shifts them). Prompts include BOS where the family writes one:
tokenize them with ``add_special_tokens=False``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase
from transformers.utils.chat_template_utils import render_jinja_template

from llava_more.errors import ConfigError, DataError
from llava_more.text.templates import IMAGE_TOKEN, ChatTemplate, get_template

IGNORE_INDEX = -100

_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


class SampleTooLong(DataError):
    """Truncation to ``max_length`` would cut an image or every supervised token: drop the sample."""


@dataclass(frozen=True)
class RenderedConversation:
    """A conversation rendered by its chat template, with the character spans that are supervised."""

    text: str
    reply_spans: list[tuple[int, int]]


def _resolve(template: str | ChatTemplate) -> ChatTemplate:
    return template if isinstance(template, ChatTemplate) else get_template(template)


def to_messages(conversations: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """LLaVA turns (``from``/``value``, or ``role``/``content``) as chat-template messages.

    Checks the shape (optional system turn first, then user and assistant alternating, starting with the
    user) and, as LLaVA does, moves the single ``<image>`` to the start of its user turn.
    """
    messages: list[dict[str, str]] = []
    for index, turn in enumerate(conversations):
        if not isinstance(turn, Mapping):
            raise DataError(
                f"conversation turn {index} is {turn!r}; each turn must be a {{'from', 'value'}} object"
            )
        role = _ROLES.get(str(turn.get("from", turn.get("role"))))
        content = turn.get("value", turn.get("content"))
        if role is None or not isinstance(content, str):
            raise DataError(
                f"conversation turn {index} is {dict(turn)!r}; each turn needs 'from' "
                f"(human, gpt or system) and a string 'value'"
            )
        if role == "system" and index != 0:
            raise DataError(f"conversation turn {index} is a system turn; only the first turn may be one")
        expected = "user" if not messages or messages[-1]["role"] in ("system", "assistant") else "assistant"
        if role != "system" and role != expected:
            raise DataError(
                f"conversation turn {index} is from {turn.get('from', turn.get('role'))!r} where a "
                f"{'human' if expected == 'user' else 'gpt'} turn was expected; turns must alternate human/gpt"
            )
        messages.append({"role": role, "content": content})

    image_turns = [m for m in messages if IMAGE_TOKEN in m["content"]]
    if sum(m["content"].count(IMAGE_TOKEN) for m in image_turns) > 1:
        raise DataError(
            f"the conversation holds more than one {IMAGE_TOKEN}; one image per sample is supported"
        )
    for message in image_turns:
        if message["role"] != "user":
            raise DataError(f"{IMAGE_TOKEN} appears in a {message['role']} turn; it belongs in a human turn")
        message["content"] = IMAGE_TOKEN + "\n" + message["content"].replace(IMAGE_TOKEN, "").strip()
    return messages


def render_conversation(
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Mapping[str, str]],
    template_id: str | ChatTemplate,
) -> RenderedConversation:
    """Render with the template and check that it marked exactly the assistant replies as supervised."""
    template = _resolve(template_id)
    messages = to_messages(conversations)
    try:
        texts, spans_per_text = render_jinja_template(
            conversations=[messages],
            chat_template=template.jinja,
            return_assistant_tokens_mask=True,
            **tokenizer.special_tokens_map,
        )
    except TemplateError as exc:
        raise ConfigError(f"chat template {template.id!r} could not render the conversation: {exc}") from exc
    text, spans = texts[0], [tuple(span) for span in spans_per_text[0]]

    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    if not replies:
        raise DataError("the conversation has no gpt turn, so it has nothing to supervise")
    if len(spans) != len(replies):
        raise DataError(
            f"chat template {template.id!r} marked {len(spans)} supervised spans for {len(replies)} replies; "
            f"every assistant reply must sit inside {{% generation %}}...{{% endgeneration %}}"
        )
    for number, ((start, end), reply) in enumerate(zip(spans, replies, strict=True), start=1):
        if reply.strip() not in text[start:end]:
            raise DataError(
                f"chat template {template.id!r}: supervised span {number} is {text[start:end]!r}, "
                f"which does not hold reply {number} ({reply!r})"
            )
    return RenderedConversation(text=text, reply_spans=spans)


def _in_spans(offset: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    token_start, token_end = offset
    return any(token_start < end and token_end > start for start, end in spans)


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Mapping[str, str]],
    template_id: str | ChatTemplate,
    *,
    num_image_tokens: int,
    max_length: int | None,
) -> dict[str, list[int]]:
    """Token ids and labels of one sample.

    Labels are ``-100`` except on assistant replies and their end-of-turn token. The ``<image>`` token is
    expanded to ``num_image_tokens`` copies (never supervised). Sequences longer than ``max_length`` are
    cut on the right. Raises ``SampleTooLong`` (a ``DataError``) when that cut would remove image tokens
    or every supervised token: the caller drops and counts such samples. Any other ``DataError`` means the
    record (or the template) is unusable; no sample is ever returned with zero supervised tokens.
    """
    template = _resolve(template_id)
    rendered = render_conversation(tokenizer, conversations, template)
    encoding = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    expected_images = rendered.text.count(IMAGE_TOKEN)
    if expected_images and encoding["input_ids"].count(image_id) != expected_images:
        raise ConfigError(
            f"the tokenizer does not encode {IMAGE_TOKEN} as one token; configure it with apply_template()"
        )
    if expected_images and num_image_tokens < 1:
        raise ConfigError(
            f"num_image_tokens is {num_image_tokens} for a conversation with an image; it must be >= 1"
        )

    input_ids: list[int] = []
    labels: list[int] = []
    for token_id, offset in zip(encoding["input_ids"], encoding["offset_mapping"], strict=True):
        if token_id == image_id:
            input_ids += [image_id] * num_image_tokens
            labels += [IGNORE_INDEX] * num_image_tokens
        else:
            input_ids.append(token_id)
            labels.append(token_id if _in_spans(offset, rendered.reply_spans) else IGNORE_INDEX)

    if all(label == IGNORE_INDEX for label in labels):
        raise DataError(
            f"chat template {template.id!r} left no supervised token in the conversation; "
            f"check the template's {{% generation %}} markers"
        )
    if max_length is not None and len(input_ids) > max_length:
        full_length = len(input_ids)
        image_tokens_total = input_ids.count(image_id) if expected_images else 0
        input_ids, labels = input_ids[:max_length], labels[:max_length]
        if expected_images and input_ids.count(image_id) != image_tokens_total:
            raise SampleTooLong(
                f"truncating the {full_length}-token sample to max_length={max_length} would cut its image tokens"
            )
        if all(label == IGNORE_INDEX for label in labels):
            raise SampleTooLong(
                f"truncating the {full_length}-token sample to max_length={max_length} leaves no supervised token"
            )
    return {"input_ids": input_ids, "labels": labels}


def generation_prompt(
    tokenizer: PreTrainedTokenizerBase, template_id: str | ChatTemplate, question: str, *, has_image: bool
) -> str:
    """One user turn (``<image>\\n`` first when ``has_image``) rendered up to and including the assistant header."""
    template = _resolve(template_id)
    question = question.replace(IMAGE_TOKEN, "").strip() if has_image else question
    content = f"{IMAGE_TOKEN}\n{question}" if has_image else question
    messages = to_messages([{"from": "human", "value": content}])
    try:
        prompt = tokenizer.apply_chat_template(
            messages, chat_template=template.jinja, tokenize=False, add_generation_prompt=True
        )
    except TemplateError as exc:
        raise ConfigError(f"chat template {template.id!r} could not render the prompt: {exc}") from exc
    return prompt
