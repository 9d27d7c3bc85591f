"""The loss-mask audit: before a stage trains, check that exactly the assistant replies are supervised.

The audit looks at what training will really consume (token ids and labels of a seeded sample of the
training set) and knows nothing of how the mask was made: every run of supervised tokens, decoded on
its own, must be exactly one assistant reply followed by the template's end-of-turn (after the
template's reply prefix, e.g. Vicuna's space after ``ASSISTANT:``), one run per reply, in order, and each supervised
label must be the token at its position. A sample cut at ``max_length`` may end inside its last
supervised reply. The first record that fails stops the run with a ``MaskAuditFailed`` naming it.
"""

from __future__ import annotations

import logging
import random
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from llava_more.errors import DataError
from llava_more.text.encode import IGNORE_INDEX, resolve_template
from llava_more.text.render import to_turns
from llava_more.text.templates import ChatTemplate

logger = logging.getLogger(__name__)

# Records audited before a stage trains (all of them when the set is smaller).
AUDIT_SAMPLE = 256


class MaskAuditFailed(DataError):
    """A supervised span of a training sample is not exactly an assistant reply plus its end-of-turn."""


def _runs(labels: Sequence[int]) -> list[tuple[int, int]]:
    runs, start = [], None
    for position, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = position
        elif label == IGNORE_INDEX and start is not None:
            runs.append((start, position))
            start = None
    return runs


def _normal(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _round_trip(tokenizer: PreTrainedTokenizerBase, text: str) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def audit_sample(
    tokenizer: PreTrainedTokenizerBase,
    template: str | ChatTemplate,
    conversations: Sequence[Mapping[str, str]],
    encoded: Mapping[str, Sequence[int]],
    *,
    max_length: int | None = None,
    record: str = "the sample",
) -> None:
    """Raise ``MaskAuditFailed`` unless ``encoded``'s labels supervise exactly the replies of
    ``conversations`` plus their end-of-turn tokens."""
    chat = resolve_template(template, tokenizer)
    end_of_turn = chat.end_of_turn or tokenizer.eos_token
    replies = [t.text for t in to_turns(conversations) if t.role == "assistant"]
    ids, labels = list(encoded["input_ids"]), list(encoded["labels"])
    truncated = max_length is not None and len(ids) >= max_length

    def fail(reason: str) -> None:
        raise MaskAuditFailed(
            f"{record}: loss-mask audit failed under chat template {chat.id!r}: {reason}; training would "
            "learn from the wrong tokens. Fix the record, or the template (a built-in template for the LLM: "
            "params.yaml backbones.llm.<id>.template)"
        )

    if len(ids) != len(labels):
        fail(f"{len(ids)} token ids but {len(labels)} labels")
    for position, (token, label) in enumerate(zip(ids, labels, strict=True)):
        if label != IGNORE_INDEX and label != token:
            fail(f"the label at position {position} is {label}, not the token there ({token})")
    runs = _runs(labels)
    if len(runs) > len(replies) or (len(runs) < len(replies) and not truncated) or not runs:
        fail(f"{len(runs)} supervised spans for {len(replies)} assistant replies")
    for number, ((start, end), reply) in enumerate(zip(runs, replies, strict=False), start=1):
        held = _normal(
            tokenizer.decode(ids[start:end], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        )
        expected = _normal(chat.reply_prefix + reply + end_of_turn)
        # SentencePiece decoding drops the space a run starts with (Vicuna's space before the reply), and
        # some vocabularies decode a character differently than they read it: both count as the text.
        readings = {expected, expected[1:]} if expected.startswith(" ") else {expected}
        readings |= {_normal(_round_trip(tokenizer, r)) for r in readings}
        last_cut = truncated and number == len(runs) and end == len(ids)
        if held in readings or (last_cut and held and any(r.startswith(held) for r in readings)):
            continue
        fail(
            f"supervised span {number} is {held!r}, expected assistant reply {number} plus the end-of-turn: {expected!r}"
        )


def audit_dataset(dataset: Any, *, sample: int = AUDIT_SAMPLE, seed: int = 0) -> int:
    """Audit a seeded sample of a training dataset (``llava_more.train.dataset.LlavaTrainDataset``):
    the samples it yields, against the replies of its records. Returns how many were audited."""
    count = min(sample, len(dataset))
    chosen = sorted(random.Random(seed).sample(range(len(dataset)), count))
    records = dataset.source.records
    for index in chosen:
        record = records[dataset.indices[index]]
        item = dataset[index]
        encoded = {key: item[key].tolist() for key in ("input_ids", "labels")}
        audit_sample(
            dataset.tokenizer,
            dataset.template_id,
            record["conversations"],
            encoded,
            max_length=dataset.max_length,
            record=f"{dataset.source.json_path}: record {record.get('id', index)!r}",
        )
    logger.info("loss-mask audit: %d of %d samples supervise exactly their replies", count, len(dataset))
    return count
