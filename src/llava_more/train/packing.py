"""Padding-free training batches and the loss over supervised positions only.

``PackedCollator`` places a micro-batch's samples end to end in rows of at most ``row_tokens``
tokens (first-fit decreasing) instead of padding every sample to the longest one. Position ids
restart at 0 for every sample and no attention mask is passed: the attention reads the packed
layout from the position ids (flash-attention's variable-length kernels on a GPU; elsewhere
``model/varlen_attention.py``, which the trainer switches to for packed runs), so a sample never
attends to its neighbours. The samples of a micro-batch are the same as in the padded batch, only
laid out differently, so the loss of a step is the padded step's loss up to float rounding (tested).

With variable-length attention one row per micro-batch is best (no padding at all); that is the
default. Several shorter rows only bound the row length for kernels that need a row-sized mask.

``training_inputs`` (built on ``supervised_targets``) is what ``LlavaTrainer.compute_loss`` passes the
model: the LM head runs only where a label follows, so image tokens, prompts and padding never reach
the (vocabulary-sized) output layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llava_more.text.encode import IGNORE_INDEX


def supervised_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keep, targets)``: positions whose next token is supervised, and those next tokens.

    ``keep`` is a boolean (batch, length) mask for ``logits_to_keep``; ``targets`` are the labels the
    kept logits predict, in the same (row-major) order. A causal LM's logit at ``t`` predicts ``t + 1``.
    """
    shifted = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:]
    keep = shifted != IGNORE_INDEX
    return keep, shifted[keep]


def training_inputs(batch: dict[str, torch.Tensor]) -> dict:
    """Model inputs for a training step on ``batch`` (padded or packed): logits and loss only at
    supervised positions, and no KV cache. The cache matters: with one, transformers does not read
    the packed layout from the position ids and lets packed samples attend to each other."""
    keep, targets = supervised_targets(batch["labels"])
    return {**batch, "labels": targets, "shift_labels": targets, "logits_to_keep": keep, "use_cache": False}


def pack_rows(lengths: Sequence[int], row_tokens: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into rows of at most ``row_tokens`` tokens (first-fit decreasing).

    A sample longer than ``row_tokens`` gets a row of its own. Within a row, samples keep the order
    of their indices, so the layout depends only on the lengths.
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        size = lengths[index]
        for row, free in enumerate(room):
            if size <= free:
                rows[row].append(index)
                room[row] -= size
                break
        else:
            rows.append([index])
            room.append(row_tokens - size)
    return [sorted(row) for row in rows]


def padded_slots(lengths: Sequence[int]) -> int:
    """Token slots of a right-padded micro-batch of samples of ``lengths`` (``LlavaCollator``)."""
    return len(lengths) * max(lengths) if lengths else 0


def packed_slots(lengths: Sequence[int], row_tokens: int) -> int:
    """Token slots of the same samples packed by ``PackedCollator`` (rows padded to the longest row)."""
    rows = pack_rows(lengths, row_tokens)
    return len(rows) * max(sum(lengths[i] for i in row) for row in rows) if rows else 0


@dataclass
class PackedCollator:
    """Pack ``features`` into rows of at most ``row_tokens`` tokens, with per-sample position ids.

    Like ``LlavaCollator``, a micro-batch without any image gets ``placeholder`` (an unsupervised
    image row) so that the vision tower runs on every rank. Image tensors are stacked in the order
    their image tokens appear in the rows, which is the order LLaVA assigns features to tokens.
    The first label of every sample is ignored, so no sample is trained to predict its neighbour.
    """

    pad_token_id: int
    row_tokens: int
    placeholder: dict[str, torch.Tensor] | None = None

    def __call__(self, features: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if self.placeholder is not None and not any("pixel_values" in f for f in features):
            features = [*features, self.placeholder]
        rows = pack_rows([len(f["input_ids"]) for f in features], self.row_tokens)
        width = max(sum(len(features[i]["input_ids"]) for i in row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        images = []
        for r, row in enumerate(rows):
            start = 0
            for index in row:
                feature = features[index]
                size = len(feature["input_ids"])
                input_ids[r, start : start + size] = feature["input_ids"]
                labels[r, start : start + size] = feature["labels"]
                labels[r, start] = IGNORE_INDEX
                position_ids[r, start : start + size] = torch.arange(size)
                if "pixel_values" in feature:
                    images.append(feature["pixel_values"])
                start += size
            # Row padding is one more "sample" of its own (positions from 0), attended by nothing else.
            position_ids[r, start:] = torch.arange(width - start)
        out = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
        if images:
            out["pixel_values"] = torch.stack(images)
        return out
