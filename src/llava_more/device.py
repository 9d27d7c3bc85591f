"""The device a job computes on, decided in one place from what the job was given, and logged.

Every command that runs a model (``train``, ``evaluate``, ``chat``, ``recaption``) asks
``resolve_device``. ``auto`` (the default) means CUDA when torch can use a GPU, the CPU otherwise.
A job that was *given* GPUs (SLURM's ``CUDA_VISIBLE_DEVICES`` / ``SLURM_GPUS_ON_NODE``) but cannot use
them (a CPU build of torch, a driver mismatch) is an error, not a silent CPU run that would take days
on a node reserved for its GPUs; ``LLAVA_MORE_DEVICE=cpu`` runs it on the CPU anyway.

The environment variable ``LLAVA_MORE_DEVICE`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) overrides
``auto`` for every command of a job, e.g. in a SLURM profile or a test on fake GPUs.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping
from typing import NamedTuple

from llava_more.errors import UserError

logger = logging.getLogger(__name__)

ENV_VAR = "LLAVA_MORE_DEVICE"
# What CUDA_VISIBLE_DEVICES holds when a job was given no GPU (SLURM writes NoDevFiles on some sites).
_NO_GPU_VALUES = ("", "-1", "NoDevFiles", "none", "void")


def gpus_given(env: Mapping[str, str]) -> str | None:
    """The GPUs the job was given, as the scheduler wrote them, or None when it was given none."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() not in _NO_GPU_VALUES:
        return f"CUDA_VISIBLE_DEVICES={visible}"
    on_node = env.get("SLURM_GPUS_ON_NODE", "")
    if on_node.isdigit() and int(on_node) > 0:
        return f"SLURM_GPUS_ON_NODE={on_node}"
    return None


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _cuda_description(index: int) -> str:
    import torch

    return f"{torch.cuda.get_device_name(index)}, {torch.cuda.device_count()} visible"


class DeviceChoice(NamedTuple):
    device: str  # cpu | cuda | cuda:N
    reason: str  # why, for the job's log


def decide_device(
    requested: str | None = "auto", *, purpose: str = "this job", env: Mapping[str, str] | None = None
) -> DeviceChoice:
    """The device for ``requested`` (``auto``/None: decide from the job's GPUs) and why.

    ``UserError`` when a GPU is asked for (explicitly, or by the scheduler giving the job one) and
    torch cannot use it.
    """
    env = os.environ if env is None else env
    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        requested = env.get(ENV_VAR, "auto").strip().lower() or "auto"
    given = gpus_given(env)
    count = _cuda_count()
    if requested == "cpu":
        return DeviceChoice("cpu", "as asked" + (f"; the job's GPUs ({given}) stay unused" if given else ""))
    if requested == "auto":
        if count:
            return DeviceChoice("cuda", _cuda_description(0) + (f"; {given}" if given else ""))
        if given:
            raise UserError(
                f"{purpose} was given GPU(s) ({given}) but torch cannot use CUDA (torch.cuda.is_available() is "
                f"False: a CPU build of torch, or a driver that does not match it); install a CUDA build of torch "
                f"on the node, or set {ENV_VAR}=cpu to run on the CPU anyway"
            )
        return DeviceChoice("cpu", "no GPU was given to this job")
    if requested == "cuda" or requested.startswith("cuda:"):
        suffix = requested.partition(":")[2]
        if suffix and not suffix.isdigit():
            raise UserError(f"device {requested!r}: expected auto, cpu, cuda or cuda:N")
        index = int(suffix or 0)
        if index >= count:
            raise UserError(
                f"device {requested!r}: torch sees {count} CUDA device(s) here"
                + (f" (the job was given {given})" if given else "")
                + "; use auto or cpu"
            )
        return DeviceChoice(requested, _cuda_description(index))
    raise UserError(f"device {requested!r}: expected auto, cpu, cuda or cuda:N")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--device`` option of a command that runs a model (``resolve_device`` decides ``auto``)."""
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when this job has a usable GPU, else the CPU), cpu, cuda[:N]",
    )


def resolve_device(
    requested: str | None = "auto",
    *,
    purpose: str = "this job",
    env: Mapping[str, str] | None = None,
    log: bool = True,
) -> str:
    """``decide_device``'s device; with ``log``, says at INFO level what was decided and why."""
    choice = decide_device(requested, purpose=purpose, env=env)
    if log:
        logger.info("%s runs on %s (%s)", purpose, choice.device, choice.reason)
    return choice.device
