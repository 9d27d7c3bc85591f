"""Stage-1/2 LLaVA training on the HF Trainer: checkpoints, exact resume, signals, launch.

The recipe (``TrainConfig``, ``split_batch``: ``train.config``, no torch) is named here;
``train_stage`` is ``train.trainer``'s, imported from there (it brings torch and transformers).
"""

from llava_more.train.config import BatchSplit, TrainConfig, split_batch

__all__ = ["BatchSplit", "TrainConfig", "split_batch"]
