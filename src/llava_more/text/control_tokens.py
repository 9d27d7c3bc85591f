"""Control tokens come from the template, never from the text: tokenization that keeps them apart.

A tokenizer turns every occurrence of a special token's string into that token, wherever it is; a
record whose text spells ``<|eot_id|>`` or ``<|start_header_id|>assistant`` would otherwise end a turn
or fake an assistant turn. ``tokenize_rendered`` tokenizes a rendered conversation the tokenizer's own
way, except that inside the messages' text (``RenderedConversation.text_spans``) special-token strings
are ordinary text: the stretch between two genuine control tokens that holds such a string is
tokenized again with special-token matching switched off, in the same context (after a token, so
tokenizers whose first word is treated differently, such as SentencePiece's, read it as they would in
place). Text without such strings is tokenized exactly as ``tokenizer(text)`` does.

``spelled_control_tokens`` finds such strings in dataset text, for validation to report.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from tokenizers import AddedToken, Tokenizer

from llava_more.text.templates import FALLBACK_PAD_TOKEN, IMAGE_TOKEN, all_special_tokens

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# A non-special added token in the private copy: a stretch tokenized after it is read as it would be
# after any control token (not as the start of the text).
_BOUNDARY = "\ue002llava-more-boundary\ue003"
_CACHE_ATTRIBUTE = "_llava_more_text_backend"
_SPECIAL_IDS_ATTRIBUTE = "_llava_more_special_ids"

# Markers of common chat formats beyond the built-in templates' own (Qwen/ChatML, Mistral, Phi-3,
# Gemma, Llama-2, SentencePiece BOS/EOS), for validation: a dataset is validated once, before any LLM
# is chosen, so it is checked against every family's markers.
_OTHER_FAMILIES = (
    "<|im_start|>", "<|im_end|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "<|eot_id|>",
    "<s>", "</s>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "<start_of_turn>", "<end_of_turn>",
)  # fmt: skip
# Any other ``<|name|>`` / ``<｜name｜>`` marker (Llama-3, Phi, Qwen, DeepSeek reserved tokens).
_MARKER_PATTERN = re.compile(r"<\|[A-Za-z0-9_.:\- ]{1,40}\|>|<｜[^｜\s]{1,40}｜>")


@dataclass(frozen=True)
class TokenizedText:
    input_ids: list[int]
    offsets: list[tuple[int, int]]


def _special_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    cached = tokenizer.__dict__.get(_SPECIAL_IDS_ATTRIBUTE)
    if cached is not None and cached[0] == len(tokenizer):
        return cached[1]
    ids = set(tokenizer.all_special_ids)
    ids.update(index for index, token in tokenizer.added_tokens_decoder.items() if token.special)
    tokenizer.__dict__[_SPECIAL_IDS_ATTRIBUTE] = (len(tokenizer), ids)
    return ids


def _text_backend(tokenizer: PreTrainedTokenizerBase) -> Tokenizer:
    """A private copy of the tokenizer's backend that reads special-token strings as text (cached)."""
    fingerprint = (len(tokenizer), tuple(sorted(tokenizer.get_added_vocab().items())))
    cached = tokenizer.__dict__.get(_CACHE_ATTRIBUTE)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    backend.add_tokens([AddedToken(_BOUNDARY, special=False, normalized=False)])
    backend.encode_special_tokens = True
    tokenizer.__dict__[_CACHE_ATTRIBUTE] = (fingerprint, backend)
    return backend


def _as_text(tokenizer: PreTrainedTokenizerBase, text: str, start: int) -> TokenizedText:
    """``text`` (found at ``start`` of the whole) tokenized with special-token strings as text."""
    if not getattr(tokenizer, "is_fast", False):
        # Slow tokenizers have no such switch per call; the chunk is read on its own.
        ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        return TokenizedText(ids, [(start, start + len(text))] * len(ids))
    backend = _text_backend(tokenizer)
    lead = _BOUNDARY if start > 0 else ""
    encoding = backend.encode(lead + text, add_special_tokens=False)
    ids, offsets = encoding.ids, encoding.offsets
    if lead:
        ids, offsets = ids[1:], offsets[1:]
    shift = start - len(lead)
    return TokenizedText(list(ids), [(a + shift, b + shift) for a, b in offsets])


def _inside(offset: tuple[int, int], spans: Sequence[tuple[int, int]]) -> bool:
    start, end = offset
    return any(start < span_end and end > span_start for span_start, span_end in spans)


def tokenize_rendered(
    tokenizer: PreTrainedTokenizerBase, text: str, text_spans: Sequence[tuple[int, int]]
) -> TokenizedText:
    """Token ids and character offsets of ``text``, where no special token comes from ``text_spans``."""
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(encoding["input_ids"]), [tuple(o) for o in encoding["offset_mapping"]]
    special = _special_ids(tokenizer)
    controls = [i for i, token in enumerate(ids) if token in special]
    forged = [i for i in controls if _inside(offsets[i], text_spans)]
    if not forged:
        return TokenizedText(ids, offsets)

    # Genuine control tokens split the text into stretches; those holding a forged one are redone.
    forged_set = set(forged)
    genuine = [i for i in controls if i not in forged_set]
    out_ids: list[int] = []
    out_offsets: list[tuple[int, int]] = []
    bounds = [-1, *genuine, len(ids)]
    for left, right in zip(bounds, bounds[1:], strict=False):
        stretch = range(left + 1, right)
        if any(i in forged_set for i in stretch):
            begin = offsets[left][1] if left >= 0 else 0
            finish = offsets[right][0] if right < len(ids) else len(text)
            redone = _as_text(tokenizer, text[begin:finish], begin)
            out_ids += redone.input_ids
            out_offsets += redone.offsets
        else:
            out_ids += [ids[i] for i in stretch]
            out_offsets += [offsets[i] for i in stretch]
        if right < len(ids):
            out_ids.append(ids[right])
            out_offsets.append(offsets[right])
    return TokenizedText(out_ids, out_offsets)


@cache
def _known_markers() -> tuple[str, ...]:
    markers = [
        t for t in (*all_special_tokens(), *_OTHER_FAMILIES) if t not in (IMAGE_TOKEN, FALLBACK_PAD_TOKEN)
    ]
    return tuple(sorted(set(markers), key=len, reverse=True))


@cache
def _spelling_pattern(extra: tuple[str, ...]) -> re.Pattern[str]:
    markers = sorted({*_known_markers(), *extra} - {IMAGE_TOKEN}, key=len, reverse=True)
    return re.compile("|".join(re.escape(m) for m in markers) + "|" + _MARKER_PATTERN.pattern)


def spelled_control_tokens(texts: Iterable[str], extra: Iterable[str] = ()) -> list[str]:
    """The control-token strings (of any chat family, plus ``extra``) that ``texts`` spell, in order.

    ``<image>`` is not among them: in LLaVA data it marks where the image goes.
    """
    pattern = _spelling_pattern(tuple(extra))
    found: list[str] = []
    for text in texts:
        for match in pattern.finditer(text):
            if match.group() not in found:
                found.append(match.group())
    return found


def records_spelling_control_tokens(records: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Record id -> the control-token strings its turns spell, for the records that spell any.

    Such records train correctly (their text stays text), but a dataset holding them was likely
    scraped from chat logs or built by a buggy converter: validation reports them.
    """
    found: dict[str, list[str]] = {}
    for index, record in enumerate(records):
        turns = record.get("conversations") or []
        spelled = spelled_control_tokens(
            str(turn.get("value", "")) for turn in turns if isinstance(turn, Mapping)
        )
        if spelled:
            found[str(record.get("id", f"index {index}"))] = spelled
    return found
