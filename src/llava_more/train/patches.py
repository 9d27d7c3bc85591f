"""The changes a training run makes to its model for as long as it trains, as one scope.

Packed rows (``packing``) need attention that reads sample boundaries from position ids: flash-attention
does; SDPA and eager get the variable-length wrapper (``model/varlen_attention.py``) for the whole run,
since gradient checkpointing recomputes attention during backward and a per-call switch would not do.
``fused_loss`` runs the LM head and the loss together in chunks (``train/fused_loss.py``). Both are
applied before the Trainer wraps the model (DeepSpeed hooks the modules it finds then) and undone on
leaving the scope, so the model that is exported is the plain transformers model again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from llava_more.model.varlen_attention import restore_attention, use_varlen_attention
from llava_more.train.fused_loss import chunk_rows_for, restore_plain_loss, use_fused_loss


@contextlib.contextmanager
def training_patches(model: nn.Module, *, packing: bool, fused_loss: bool) -> Iterator[list[str]]:
    """Patch ``model`` (a LLaVA ``...ForConditionalGeneration``) as the recipe asks, for the ``with`` block.

    Yields one line per patch applied, for the run's log.
    """
    text_config = model.config.get_text_config()
    applied = []
    replaced = use_varlen_attention(model) if packing else None
    if packing:
        applied.append(f"packed rows; LLM attention: {text_config._attn_implementation}")
    try:
        if fused_loss:
            use_fused_loss(model)
            applied.append(
                f"LM head and loss: fused, chunked ({chunk_rows_for(text_config.vocab_size)} positions per chunk)"
            )
        yield applied
    finally:
        restore_plain_loss(model)
        restore_attention(model, replaced)
