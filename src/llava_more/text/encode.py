"""Turn a LLaVA conversation into ``input_ids`` + ``labels`` (the loss mask), and encode generation prompts.

The mask comes from the rendered template (``llava_more.text.render``): the character span of every
assistant reply plus its end-of-turn token, from the template's ``{% generation %}`` markers or
derived from the template itself. A token is supervised when it starts inside such a span; a token
that starts before a span and reaches into it would put part of a reply in the prompt, and raises.
No sample is ever returned with zero supervised tokens (the reference project's Llama-3.1 bug).

Tokenization keeps control tokens to the template (``llava_more.text.control_tokens``): text that
spells a special token, in a record or in a question, stays text, in training and in inference.

Labels are not shifted (the model shifts them). Prompts include BOS where the family writes one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from llava_more.errors import ConfigError, DataError
from llava_more.text.control_tokens import tokenize_rendered
from llava_more.text.render import RenderedConversation, Turn, render_turns, to_messages, to_turns
from llava_more.text.templates import IMAGE_TOKEN, ChatTemplate, get_template

IGNORE_INDEX = -100


class SampleTooLong(DataError):
    """Truncation to ``max_length`` would cut an image or every supervised token: drop the sample."""


@dataclass(frozen=True)
class EncodedPrompt:
    """A generation prompt: its text (one ``<image>`` per image) and its token ids (images expanded)."""

    text: str
    input_ids: list[int]


def resolve_template(template: str | ChatTemplate, tokenizer: PreTrainedTokenizerBase) -> ChatTemplate:
    return template if isinstance(template, ChatTemplate) else get_template(template, tokenizer)


def _image_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if (
        image_id is None
        or image_id == tokenizer.unk_token_id
        or tokenizer.convert_ids_to_tokens(image_id) != IMAGE_TOKEN
    ):
        raise ConfigError(
            f"the tokenizer does not encode {IMAGE_TOKEN} as one token; configure it with apply_template()"
        )
    return image_id


def _tokens(
    tokenizer: PreTrainedTokenizerBase, rendered: RenderedConversation, images: int, num_image_tokens: int
) -> tuple[list[int], list[tuple[int, int]]]:
    """Ids and offsets of a render; each image slot expanded to ``num_image_tokens`` copies."""
    tokenized = tokenize_rendered(tokenizer, rendered.text, rendered.text_spans)
    if not images:
        return tokenized.input_ids, tokenized.offsets
    image_id = _image_token_id(tokenizer)
    if tokenized.input_ids.count(image_id) != images:
        raise ConfigError(
            f"the tokenizer does not encode {IMAGE_TOKEN} as one token; configure it with apply_template()"
        )
    if num_image_tokens < 1:
        raise ConfigError(
            f"num_image_tokens is {num_image_tokens} for a conversation with an image; it must be >= 1"
        )
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    for token, offset in zip(tokenized.input_ids, tokenized.offsets, strict=True):
        copies = num_image_tokens if token == image_id else 1
        ids += [token] * copies
        offsets += [offset] * copies
    return ids, offsets


def _labels(
    ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]], image_id: int | None
) -> list[int]:
    """A token is supervised when it starts inside a reply span (spans and tokens are both in order)."""
    labels, span_index = [], 0
    for token, (start, end) in zip(ids, offsets, strict=True):
        while span_index < len(spans) and spans[span_index][1] <= start:
            span_index += 1
        if token == image_id or span_index == len(spans):
            labels.append(IGNORE_INDEX)
            continue
        span_start, span_end = spans[span_index]
        if start < span_start < end:
            raise ConfigError(
                "a token of the rendered conversation starts in the prompt and ends inside a reply, so the "
                "reply cannot be supervised on its own; the template's generation prompt must end at a "
                "token boundary"
            )
        labels.append(token if span_start <= start < span_end else IGNORE_INDEX)
    return labels


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
    template = resolve_template(template_id, tokenizer)
    turns = to_turns(conversations)
    rendered = render_turns(tokenizer, turns, template)
    images = sum(t.images for t in turns)
    input_ids, offsets = _tokens(tokenizer, rendered, images, num_image_tokens)
    image_id = _image_token_id(tokenizer) if images else None
    labels = _labels(input_ids, offsets, rendered.reply_spans, image_id)

    if all(label == IGNORE_INDEX for label in labels):
        raise DataError(
            f"chat template {template.id!r} left no supervised token in the conversation; "
            f"check the template's {{% generation %}} markers"
        )
    if max_length is not None and len(input_ids) > max_length:
        full_length = len(input_ids)
        image_tokens_total = input_ids.count(image_id) if images else 0
        input_ids, labels = input_ids[:max_length], labels[:max_length]
        if images and input_ids.count(image_id) != image_tokens_total:
            raise SampleTooLong(
                f"truncating the {full_length}-token sample to max_length={max_length} would cut its image tokens"
            )
        if all(label == IGNORE_INDEX for label in labels):
            raise SampleTooLong(
                f"truncating the {full_length}-token sample to max_length={max_length} leaves no supervised token"
            )
    return {"input_ids": input_ids, "labels": labels}


def _prompt_turns(turns: Sequence[Mapping[str, str]], images: int) -> list[Turn]:
    """Chat history (``role``/``content``, ending with a user turn) as turns; the images go first in the
    first user turn. Every text is kept as it is: an ``<image>`` it spells is text, not an image."""
    out = []
    for index, turn in enumerate(turns):
        role = turn.get("role", turn.get("from"))
        role = {"human": "user", "gpt": "assistant"}.get(role, role)
        text = turn.get("content", turn.get("value"))
        if role not in ("system", "user", "assistant") or not isinstance(text, str):
            raise DataError(f"chat turn {index} is {dict(turn)!r}; each turn needs a role and string content")
        first_user = role == "user" and not any(t.role == "user" for t in out)
        out.append(Turn(role, text.strip(), images if first_user else 0))
    if not out or out[-1].role != "user":
        raise DataError("a generation prompt needs a conversation that ends with a user turn")
    return out


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase,
    template_id: str | ChatTemplate,
    turns: Sequence[Mapping[str, str]],
    *,
    images: int,
    num_image_tokens: int,
) -> EncodedPrompt:
    """The generation prompt for ``turns`` (ending with the assistant header), with ``images`` image
    slots at the start of the first user turn, each expanded to ``num_image_tokens`` ids."""
    template = resolve_template(template_id, tokenizer)
    rendered = render_turns(
        tokenizer, _prompt_turns(turns, images), template, generation_prompt=True, supervise=False
    )
    ids, _ = _tokens(tokenizer, rendered, images, num_image_tokens)
    return EncodedPrompt(text=rendered.text, input_ids=ids)


def generation_prompt(
    tokenizer: PreTrainedTokenizerBase, template_id: str | ChatTemplate, question: str, *, has_image: bool
) -> str:
    """One user turn (``<image>\\n`` first when ``has_image``) rendered up to and including the assistant
    header. The question's text is kept as it is; tokenize prompts with ``encode_prompt``, which keeps an
    ``<image>`` or a control token spelled by the question as text."""
    template = resolve_template(template_id, tokenizer)
    turns = _prompt_turns([{"role": "user", "content": question}], int(has_image))
    return render_turns(tokenizer, turns, template, generation_prompt=True, supervise=False).text


__all__ = [
    "IGNORE_INDEX",
    "EncodedPrompt",
    "RenderedConversation",
    "SampleTooLong",
    "encode_conversation",
    "encode_prompt",
    "generation_prompt",
    "resolve_template",
    "to_messages",
]
