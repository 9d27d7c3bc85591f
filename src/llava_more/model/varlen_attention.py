"""Variable-length attention for packed rows where flash-attention is not available (CPU, SDPA, eager).

A packed row (``train/packing.py``) holds several samples end to end, with position ids that restart
at 0 for each. flash-attention's variable-length kernels read that layout directly. SDPA and eager
attention cannot: transformers gives them a (row x row) block-diagonal mask, so each layer computes
the scores of every token against every other token in the row and then throws most of them away,
and it builds that mask first. With many samples per row, that costs more than padding saves.

``varlen_<base>`` (``varlen_sdpa``, ``varlen_eager``) instead splits each row at the position-id
resets, gathers samples of similar length into a small right-padded batch of their own, and runs
the base implementation on it with a plain causal mask (causality alone keeps real tokens off the
padding behind them). A row of samples of lengths ``l_i`` then costs about ``sum(l_i^2)``, not
``(sum l_i)^2``; no row-sized mask exists, and only attention sees any padding: the projections
and MLPs, most of the work, run on the packed tokens.
The base implementation is the one the model would use unpacked (eager for Gemma-2, whose logit
soft-capping SDPA lacks), so the numbers are the padded run's up to float rounding (tested).

``use_varlen_attention(model)`` switches a model's language model to it, for packed training only:
the implementation reads sample boundaries from position ids and refuses a padding mask, so it never
silently attends across samples or into padding. Masks are registered like flash-attention's: None
for a fully causal batch, the 2-D padding mask otherwise (which the function then rejects).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NamedTuple

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask

VARLEN_PREFIX = "varlen_"
BASES = ("sdpa", "eager")
BUCKET_RATIO = 1.3


def segment_bounds(position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Per row of ``position_ids`` (batch, length): ``(start, end)`` of each sample (a run of +1 steps)."""
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    bounds = []
    length = position_ids.shape[1]
    for row in starts:
        cuts = row.nonzero().flatten().tolist() + [length]
        bounds.append(list(zip(cuts[:-1], cuts[1:], strict=False)))
    return bounds


def _causal_mask(length: int, sliding_window: int | None, device: torch.device) -> torch.Tensor:
    """(1, 1, length, length) bool mask: True where a query may attend a key."""
    q = torch.arange(length, device=device)[:, None]
    k = torch.arange(length, device=device)[None, :]
    allowed = k <= q
    if sliding_window is not None:
        allowed &= q - k < sliding_window
    return allowed[None, None]


def _eager_function(module: torch.nn.Module) -> Callable:
    """The model family's own eager attention (Gemma-2's applies soft-capping)."""
    function = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if function is None:
        raise RuntimeError(f"{type(module).__name__}: its modeling file has no eager_attention_forward")
    return function


def length_buckets(segments: list[tuple[int, int, int]]) -> list[list[tuple[int, int, int]]]:
    """Segments ``(row, start, length)``, longest first, grouped so that within a group the longest
    is at most ``BUCKET_RATIO`` times the shortest (bounding the attention a group pads)."""
    buckets: list[list[tuple[int, int, int]]] = []
    for segment in sorted(segments, key=lambda s: (-s[2], s[0], s[1])):
        if buckets and segment[2] * BUCKET_RATIO >= buckets[-1][0][2]:
            buckets[-1].append(segment)
        else:
            buckets.append([segment])
    return buckets


class _Bucket(NamedTuple):
    """Samples of similar length as a right-padded batch: where to gather them from, what is real."""

    rows: torch.Tensor  # (samples,) packed row of each sample
    positions: torch.Tensor  # (samples, width) index into the row, clamped to the sample's last token
    valid: torch.Tensor  # (samples, width) True on real tokens
    width: int


_last_plan: tuple[torch.Tensor, int, list[_Bucket]] | None = None


def packed_plan(position_ids: torch.Tensor, batch: int) -> list[_Bucket]:
    """The buckets of a packed batch. Every attention layer of one forward (and its recomputation)
    gets the same ``position_ids`` object, so the plan is made once and reused by the others."""
    global _last_plan
    if _last_plan is not None and _last_plan[0] is position_ids and _last_plan[1] == batch:
        return _last_plan[2]
    segments = [
        (row, start, end - start)
        for row, bounds in enumerate(segment_bounds(position_ids.expand(batch, -1)))
        for start, end in bounds
    ]
    plan = []
    for bucket in length_buckets(segments):
        rows, starts, lengths = (
            torch.tensor(c, device=position_ids.device) for c in zip(*bucket, strict=True)
        )
        width = int(lengths.max())
        offsets = torch.arange(width, device=position_ids.device)
        positions = starts[:, None] + torch.minimum(offsets[None, :], lengths[:, None] - 1)
        plan.append(_Bucket(rows, positions, offsets[None, :] < lengths[:, None], width))
    _last_plan = (position_ids, batch, plan)
    return plan


def _varlen(base: str) -> Callable:
    def attention(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        *,
        position_ids: torch.Tensor | None = None,
        sliding_window: int | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, None]:
        if attention_mask is not None or position_ids is None or query.shape[2] != key.shape[2]:
            raise RuntimeError(
                f"{VARLEN_PREFIX}{base} attention is for packed training rows (position ids, no padding "
                "mask, no KV cache); this model was switched to it outside packed training"
            )
        batch, heads, length, head_dim = query.shape
        eager = _eager_function(module) if base == "eager" else None
        row_index, position_index, outputs = [], [], []
        for bucket in packed_plan(position_ids, batch):
            # The bucket's samples, right-padded to its longest, as a batch of their own. Causal
            # attention never lets a real token see the padding after it, so no key mask is needed.
            width = bucket.width
            q, k, v = (
                t[bucket.rows[:, None], :, bucket.positions].transpose(1, 2) for t in (query, key, value)
            )
            window = sliding_window if sliding_window is not None and width > sliding_window else None
            if eager is not None:
                additive = torch.zeros((1, 1, width, width), dtype=q.dtype, device=q.device)
                additive.masked_fill_(~_causal_mask(width, window, q.device), torch.finfo(q.dtype).min)
                out, _ = eager(module, q, k, v, additive, sliding_window=sliding_window, **kwargs)
            elif window is not None:
                out, _ = sdpa_attention_forward(module, q, k, v, _causal_mask(width, window, q.device),
                                                is_causal=False, **kwargs)  # fmt: skip
            else:
                out, _ = sdpa_attention_forward(module, q, k, v, None, is_causal=True, **kwargs)
            row_index.append(bucket.rows[:, None].expand_as(bucket.positions)[bucket.valid])
            position_index.append(bucket.positions[bucket.valid])
            outputs.append(out[bucket.valid])  # out: (samples, width, heads, head_dim)
        result = query.new_zeros((batch, length, heads, head_dim))
        index = (torch.cat(row_index), torch.cat(position_index))
        return result.index_put(index, torch.cat(outputs)), None

    attention.__name__ = f"{VARLEN_PREFIX}{base}_attention_forward"
    return attention


for _base in BASES:
    AttentionInterface.register(f"{VARLEN_PREFIX}{_base}", _varlen(_base))
    ALL_MASK_ATTENTION_FUNCTIONS.register(f"{VARLEN_PREFIX}{_base}", flash_attention_mask)


def use_varlen_attention(model: torch.nn.Module) -> str | None:
    """Switch ``model``'s language model to ``varlen_<its implementation>`` for packed training.

    Returns the implementation it replaced (to restore with ``restore_attention``), or None when the
    model already reads packed rows natively (flash-attention) and is left as it is.
    """
    config = model.config.get_text_config()
    current = config._attn_implementation
    if current not in BASES:
        return None
    _set_text_attention(model, f"{VARLEN_PREFIX}{current}")
    return current


def restore_attention(model: torch.nn.Module, implementation: str | None) -> None:
    if implementation is not None:
        _set_text_attention(model, implementation)


def _set_text_attention(model: torch.nn.Module, implementation: str) -> None:
    # Every attention layer reads its config at call time, and the language model's layers share
    # the text config object, so one assignment switches them all (vision tower untouched).
    model.config.get_text_config()._attn_implementation = implementation
