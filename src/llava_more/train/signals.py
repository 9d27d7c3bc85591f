"""Stop cleanly when asked: checkpoint at the next optimizer step, then exit with the requeue code.

Three signals ask a training to stop: SIGTERM (SLURM, before a time limit or on preemption),
SIGUSR1 (``--signal=USR1@T``) and SIGINT (Ctrl-C). The handler only sets a flag; at the next step
boundary every rank agrees (``trainer.CheckpointOnStop``: one all-reduce, so ranks that missed the
request stop too), the Trainer saves a checkpoint and stops, and ``train_stage`` raises
``TrainingInterrupted`` (exit 75: requeue). A SIGINT while a stop is pending ends the process at
once, without a checkpoint (the next start resumes from the last complete one), as a second Ctrl-C
does in most tools.

Processes started by ``llava-more train``'s launcher (torchrun's workers) also look for the stop
file named in ``STOP_FILE_ENV``: the launcher writes it when it is asked to stop, instead of passing
the signal on, so that each request reaches the workers exactly once however many processes a
terminal or SLURM signalled (see ``commands.run_workers``).

Light on purpose (no torch, no transformers): the CLI installs the handlers before it imports them.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
# What the launcher passes on to torchrun as they are (torchrun then ends its workers).
PASSED_ON = (signal.SIGHUP, signal.SIGQUIT)
# Set by the launcher for the processes it starts: the file whose appearance asks them to stop.
STOP_FILE_ENV = "LLAVA_MORE_STOP_FILE"
STOP_FILE = "stop-requested"  # in the work dir
AGAIN_TO_ABORT = "Ctrl-C again to stop at once, without a checkpoint"


def die_of_sigint() -> None:
    """End this process now, as killed by SIGINT (what shells and Snakemake read as an interruption)."""
    for handler in logging.getLogger().handlers + logging.getLogger("llava_more").handlers:
        handler.flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


class StopRequest:
    """The flag the signal handlers set (in the process that installed them, not in forked children
    such as data-loader workers, which a terminal's Ctrl-C reaches too)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.pid = os.getpid()

    def set(self, signum: int, _frame=None) -> None:
        if os.getpid() != self.pid:
            return
        name = signal.Signals(signum).name
        if self.signal_name is None:
            self.signal_name = name
            hint = f" ({AGAIN_TO_ABORT})" if signum == signal.SIGINT else ""
            logger.warning("%s received: saving a checkpoint at the next step, then stopping%s", name, hint)
        elif signum == signal.SIGINT:
            logger.warning("%s again: stopping now, without a checkpoint", name)
            die_of_sigint()

    def set_from_file(self, path: Path) -> None:
        if self.signal_name is None:
            self.signal_name = path.read_text().strip() or "a stop request"


_installed: StopRequest | None = None


@contextmanager
def stop_on_signals(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[StopRequest]:
    """Route ``signals`` to a ``StopRequest`` for the duration of the block (main thread only).

    Re-entrant: inside an outer block the outer request is used, so a request that arrived while the
    CLI was still starting up (before ``train_stage``) is not lost. Handlers replace whatever this
    process inherited, including an ignored SIGINT (a background job of a non-interactive shell).
    """
    global _installed
    if _installed is not None:
        yield _installed
        return
    request = _installed = StopRequest()
    previous = {sig: signal.signal(sig, request.set) for sig in signals}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _installed = None
