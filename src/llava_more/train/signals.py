"""Stop cleanly on SLURM's warning signals: checkpoint at the next optimizer step, then requeue.

SLURM sends SIGTERM before killing a job at its time limit or on preemption, and ``--signal=USR1@T``
sends SIGUSR1 ``T`` seconds ahead. The handler only sets a flag; at the next step boundary every
rank agrees (one all-reduce, so ranks that missed the signal stop too), the Trainer saves a
checkpoint and stops, and ``train_stage`` raises ``TrainingInterrupted`` (exit 75: requeue).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    """The flag the signal handlers set."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def set(self, signum: int, _frame=None) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
            logger.warning(
                "%s received: saving a checkpoint at the next step, then stopping", self.signal_name
            )


@contextmanager
def stop_on_signals(request: StopRequest, signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[StopRequest]:
    """Route ``signals`` to ``request`` for the duration of the block (main thread only)."""
    previous = {sig: signal.signal(sig, request.set) for sig in signals}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class CheckpointOnSignal(TrainerCallback):
    """At each optimizer step end: if any rank got a stop signal, save and stop training."""

    def __init__(self, request: StopRequest):
        self.request = request
        self.stopped_at_step: int | None = None

    def _any_rank_requested(self, device: torch.device) -> bool:
        flag = torch.tensor([1.0 if self.request.signal_name else 0.0], device=device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def on_step_end(self, args, state, control, **kwargs):
        if self._any_rank_requested(args.device):
            if self.request.signal_name is None:
                self.request.signal_name = "a stop signal on another rank"
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at_step = state.global_step
        return control
