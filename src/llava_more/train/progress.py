"""Training logs: one plain line per logging step when stdout is not a terminal (SLURM logs), and
TensorBoard event files (loss, learning rate, samples/s) in the work dir."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from transformers import TrainerCallback
from transformers.integrations import TensorBoardCallback

logger = logging.getLogger(__name__)


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


class PlainLogLines(TrainerCallback):
    """``step 12/100 loss 2.3410 lr 1.0e-03 grad_norm 0.91 samples/s 45.2`` on the main process."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "loss" in logs:
            parts = [f"step {state.global_step}/{state.max_steps}", f"loss {logs['loss']:.4f}"]
            if "learning_rate" in logs:
                parts.append(f"lr {logs['learning_rate']:.3e}")
            if "grad_norm" in logs:
                parts.append(f"grad_norm {logs['grad_norm']:.3f}")
            if "samples_per_second" in logs:
                parts.append(f"samples/s {logs['samples_per_second']:.2f}")
            logger.info("  ".join(parts))
        elif "train_runtime" in logs:
            logger.info(
                "training finished at step %d in %.1f s (%.2f samples/s)",
                state.global_step, logs["train_runtime"], logs.get("train_samples_per_second", 0.0),
            )  # fmt: skip


def tensorboard_callback(work_dir: str | Path) -> TensorBoardCallback:
    """TensorBoard events in ``<work_dir>/tensorboard``: one folder across resumes (steps continue)."""
    callback = TensorBoardCallback()
    callback.logging_dir = str(Path(work_dir) / "tensorboard")
    return callback
