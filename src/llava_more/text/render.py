"""Render a conversation with a chat template, knowing which characters are whose.

A rendered conversation is the template's text plus two kinds of character spans:

- ``text_spans``: where the messages' own text sits. Everything outside them was written by the
  template (role headers, BOS, end-of-turn markers, the image slot): only there may a special token
  be read as a control token; inside, a string that spells one is ordinary text
  (``llava_more.text.control_tokens``).
- ``reply_spans``: what is supervised, each exactly one assistant reply plus its end-of-turn (after
  the template's reply prefix: what it writes between the generation prompt and the reply, e.g.
  Vicuna's space).

Where the text sits is found by rendering the conversation a second time with each message's text
replaced by a unique sentinel: the template's own output is what surrounds the sentinels. Putting the
texts back in must give the first render exactly, or the template changed the text in a way that
cannot be followed and a ``ConfigError`` names it.

Reply spans come from the template's ``{% generation %}`` markers where it has them; otherwise each
reply's span is derived from the template itself: the conversation up to that reply rendered with
the generation prompt is a prefix of the conversation rendered with the reply, and what follows it
up to the end-of-turn is what the model must generate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase
from transformers.utils.chat_template_utils import render_jinja_template

from llava_more.errors import ConfigError, DataError
from llava_more.text.templates import IMAGE_TOKEN, ChatTemplate, get_template

_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
# Sentinels are private-use characters around a number; a conversation that holds the prefix itself
# gets another one (the counter), so no text can collide with them.
_SENTINEL_OPEN, _SENTINEL_CLOSE = "\ue000", "\ue001"
_GENERATION_TAG = re.compile(r"{%-?\s*generation\s*-?%}")


@dataclass(frozen=True)
class Turn:
    """One message: its role, its own text, and how many images precede that text in the turn."""

    role: str
    text: str
    images: int = 0

    def content(self, text: str | None = None) -> str:
        """The message content a template receives: one ``<image>`` line per image, then the text."""
        return f"{IMAGE_TOKEN}\n" * self.images + (self.text if text is None else text)


@dataclass(frozen=True)
class RenderedConversation:
    """A conversation rendered by its chat template, with the character spans that matter."""

    text: str
    reply_spans: list[tuple[int, int]]
    text_spans: list[tuple[int, int]]


def to_turns(conversations: Sequence[Mapping[str, str]]) -> list[Turn]:
    """LLaVA turns (``from``/``value``, or ``role``/``content``) as ``Turn`` objects.

    Checks the shape (optional system turn first, then user and assistant alternating, starting with the
    user). As in LLaVA's data, ``<image>`` in a human turn marks the image: it is taken out of the text
    and the image is placed at the start of that turn. Texts are stripped of surrounding whitespace.
    """
    turns: list[Turn] = []
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
        expected = "user" if not turns or turns[-1].role in ("system", "assistant") else "assistant"
        if role != "system" and role != expected:
            raise DataError(
                f"conversation turn {index} is from {turn.get('from', turn.get('role'))!r} where a "
                f"{'human' if expected == 'user' else 'gpt'} turn was expected; turns must alternate human/gpt"
            )
        turns.append(Turn(role, content))

    marked = [i for i, t in enumerate(turns) if IMAGE_TOKEN in t.text]
    if sum(turns[i].text.count(IMAGE_TOKEN) for i in marked) > 1:
        raise DataError(
            f"the conversation holds more than one {IMAGE_TOKEN}; one image per sample is supported"
        )
    for i in marked:
        if turns[i].role != "user":
            raise DataError(f"{IMAGE_TOKEN} appears in a {turns[i].role} turn; it belongs in a human turn")
        turns[i] = Turn("user", turns[i].text.replace(IMAGE_TOKEN, ""), images=1)
    return [Turn(t.role, t.text.strip(), t.images) for t in turns]


def to_messages(conversations: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """LLaVA turns as chat-template messages (``role`` / ``content``, ``<image>`` first in its turn)."""
    return [{"role": t.role, "content": t.content()} for t in to_turns(conversations)]


def _render(
    tokenizer: PreTrainedTokenizerBase,
    template: ChatTemplate,
    messages: list[dict[str, str]],
    *,
    generation_prompt: bool,
    track: bool = False,
) -> tuple[str, list[tuple[int, int]]]:
    try:
        texts, spans = render_jinja_template(
            conversations=[messages],
            chat_template=template.jinja,
            return_assistant_tokens_mask=track,
            add_generation_prompt=generation_prompt,
            **tokenizer.special_tokens_map,
        )
    except TemplateError as exc:
        raise ConfigError(f"chat template {template.id!r} could not render the conversation: {exc}") from exc
    return texts[0], [tuple(span) for span in spans[0]] if track else []


def _sentinel_prefix(turns: Sequence[Turn]) -> str:
    counter = 0
    while any(f"{_SENTINEL_OPEN}{counter}:" in t.text for t in turns):
        counter += 1
    return f"{_SENTINEL_OPEN}{counter}:"


@lru_cache(maxsize=4096)
def _skeleton(
    tokenizer: PreTrainedTokenizerBase,
    template: ChatTemplate,
    shape: tuple[tuple[str, int, bool], ...],
    prefix: str,
    generation_prompt: bool,
) -> str:
    """The render of a conversation of this shape (role, images, has text) with sentinel texts."""
    probe = [
        {
            "role": role,
            "content": f"{IMAGE_TOKEN}\n" * images + (f"{prefix}{i}{_SENTINEL_CLOSE}" if has_text else ""),
        }
        for i, (role, images, has_text) in enumerate(shape)
    ]
    return _render(tokenizer, template, probe, generation_prompt=generation_prompt)[0]


def _fill(skeleton: str, prefix: str, turns: Sequence[Turn]) -> tuple[str, list[tuple[int, int]]] | None:
    """The skeleton with each sentinel replaced by its turn's text, and where each text landed."""
    first, *pieces = skeleton.split(prefix)
    rebuilt, spans, position = [first], [], len(first)
    for piece in pieces:
        number, close, rest = piece.partition(_SENTINEL_CLOSE)
        if not close or not number.isdigit() or int(number) >= len(turns):
            return None
        own = turns[int(number)].text
        spans.append((position, position + len(own)))
        rebuilt += [own, rest]
        position += len(own) + len(rest)
    return "".join(rebuilt), spans


def _text_spans(
    tokenizer: PreTrainedTokenizerBase,
    template: ChatTemplate,
    turns: Sequence[Turn],
    text: str,
    *,
    generation_prompt: bool,
) -> list[tuple[int, int]]:
    """Where each message's text sits in ``text`` (the render of ``turns``).

    The sentinel render depends only on the conversation's shape (roles, images, which texts are
    empty), so it is cached; a template whose output depends on the text itself cannot be followed.
    """
    prefix = _sentinel_prefix(turns)
    shape = tuple((t.role, t.images, bool(t.text)) for t in turns)
    filled = _fill(_skeleton(tokenizer, template, shape, prefix, generation_prompt), prefix, turns)
    if filled is None or filled[0] != text:
        raise ConfigError(
            f"chat template {template.id!r} changes message text while rendering it (beyond stripping "
            "surrounding whitespace), so llava-more cannot tell the text from the template's own markers; "
            "use one of the built-in templates for this LLM (params.yaml: backbones.llm.<id>.template)"
        )
    return [span for span in filled[1] if span[1] > span[0]]


def _check_reply_span(
    template: ChatTemplate, text: str, span: tuple[int, int], reply: str, end_of_turn: str, number: int
) -> None:
    """A supervised span must be the template's reply prefix, the reply, then exactly the end-of-turn."""
    held = text[span[0] : span[1]]
    if held != template.reply_prefix + reply + end_of_turn:
        raise DataError(
            f"chat template {template.id!r}: supervised span {number} is {held!r}, not reply {number} "
            f"({reply!r}) followed by its end-of-turn {end_of_turn!r}"
        )


def _derived_reply_spans(
    tokenizer: PreTrainedTokenizerBase,
    template: ChatTemplate,
    turns: Sequence[Turn],
    text: str,
    end_of_turn: str,
) -> list[tuple[int, int]]:
    """Reply spans of a template without ``{% generation %}`` markers, from prefix renders."""
    messages = [{"role": t.role, "content": t.content()} for t in turns]
    spans = []
    for k, turn in enumerate(turns):
        if turn.role != "assistant":
            continue
        prompt, _ = _render(tokenizer, template, messages[:k], generation_prompt=True)
        with_reply, _ = _render(tokenizer, template, messages[: k + 1], generation_prompt=False)
        if not with_reply.startswith(prompt) or not text.startswith(with_reply):
            raise ConfigError(
                f"chat template {template.id!r} renders a conversation differently once later turns follow "
                "(its generation prompt is not a prefix of the conversation with the reply), so reply spans "
                "cannot be derived from it; mark its replies with {% generation %} or use a built-in template"
            )
        start = len(prompt)
        lead = len(with_reply[start:]) - len(with_reply[start:].lstrip())
        end = start + lead + len(turn.text)
        if with_reply[start + lead : end] != turn.text or not with_reply.startswith(end_of_turn, end):
            raise ConfigError(
                f"chat template {template.id!r}: after the generation prompt it writes "
                f"{with_reply[start : end + len(end_of_turn) + 10]!r}, not the reply followed by "
                f"{end_of_turn!r}; llava-more supervises exactly the reply and its end-of-turn"
            )
        spans.append((start, end + len(end_of_turn)))
    return spans


def render_turns(
    tokenizer: PreTrainedTokenizerBase,
    turns: Sequence[Turn],
    template: ChatTemplate,
    *,
    generation_prompt: bool = False,
    supervise: bool = True,
) -> RenderedConversation:
    """Render ``turns``; with ``supervise`` also find and check every reply's span."""
    messages = [{"role": t.role, "content": t.content()} for t in turns]
    marked = _GENERATION_TAG.search(template.jinja) is not None
    text, marked_spans = _render(
        tokenizer, template, messages, generation_prompt=generation_prompt, track=supervise and marked
    )
    text_spans = _text_spans(tokenizer, template, turns, text, generation_prompt=generation_prompt)
    if not supervise:
        return RenderedConversation(text=text, reply_spans=[], text_spans=text_spans)

    replies = [t.text for t in turns if t.role == "assistant"]
    if not replies:
        raise DataError("the conversation has no gpt turn, so it has nothing to supervise")
    end_of_turn = template.end_of_turn or tokenizer.eos_token
    if not end_of_turn:
        raise ConfigError(f"chat template {template.id!r} needs a tokenizer with an eos_token")
    if marked:
        spans = marked_spans
        if len(spans) != len(replies):
            raise DataError(
                f"chat template {template.id!r} marked {len(spans)} supervised spans for {len(replies)} replies; "
                f"every assistant reply must sit inside {{% generation %}}...{{% endgeneration %}}"
            )
    else:
        spans = _derived_reply_spans(tokenizer, template, turns, text, end_of_turn)
    for number, (span, reply) in enumerate(zip(spans, replies, strict=True), start=1):
        _check_reply_span(template, text, span, reply, end_of_turn, number)
    return RenderedConversation(text=text, reply_spans=spans, text_spans=text_spans)


def render_conversation(
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Mapping[str, str]],
    template: str | ChatTemplate,
) -> RenderedConversation:
    """Render a LLaVA conversation for training and check that exactly its replies are supervised."""
    if not isinstance(template, ChatTemplate):
        template = get_template(template, tokenizer)
    return render_turns(tokenizer, to_turns(conversations), template)
