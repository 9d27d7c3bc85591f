"""Stage-1/2 LLaVA training on the HF Trainer: checkpoints, exact resume, signals, launch.

Public API (see docs/ARCHITECTURE.md): ``train_stage``, ``TrainConfig``, ``split_batch``.
``train_stage`` is imported lazily so that ``import llava_more.train.config`` stays light.
"""

from __future__ import annotations

from typing import Any

from llava_more.train.config import BatchSplit, TrainConfig, split_batch

__all__ = ["BatchSplit", "TrainConfig", "split_batch", "train_stage"]


def __getattr__(name: str) -> Any:
    if name == "train_stage":
        from llava_more.train.trainer import train_stage

        return train_stage
    raise AttributeError(f"module 'llava_more.train' has no attribute {name!r}")
