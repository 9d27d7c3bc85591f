"""Resumable checkpoints in the work dir: completeness markers, choosing where to resume, rotation.

The HF Trainer writes ``checkpoint-<step>/`` file by file (model, optimizer, scheduler, RNG states,
DeepSpeed shards), so a job killed while saving leaves a half-written folder. ``CompleteCheckpoints``
(a Trainer callback) writes ``COMPLETE_MARKER`` into the folder only after every rank finished
writing; the marker lists each file with its size, so a folder whose marker is missing or whose
files were truncated afterwards is recognised as broken, skipped with a warning, and the previous
complete checkpoint is used.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "llava_more_complete.json"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dirs(work_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``checkpoint-<step>`` folder, newest first."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return []
    found = []
    for child in work_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found, reverse=True)


def _file_sizes(folder: Path) -> dict[str, int]:
    return {
        str(path.relative_to(folder)): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != COMPLETE_MARKER
    }


def mark_complete(folder: str | Path, info: dict[str, Any]) -> None:
    """Write the marker last, atomically (temp file + rename), listing every file and its size."""
    folder = Path(folder)
    payload = {**info, "files": _file_sizes(folder)}
    tmp = folder / f".{COMPLETE_MARKER}.tmp"
    with open(tmp, "w") as handle:
        json.dump(payload, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, folder / COMPLETE_MARKER)


def check_complete(folder: str | Path) -> str | None:
    """``None`` when the checkpoint is complete, else why it is not."""
    folder = Path(folder)
    marker = folder / COMPLETE_MARKER
    if not marker.is_file():
        return "no completion marker (the save was interrupted)"
    try:
        recorded = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return "the completion marker is unreadable"
    if not recorded:
        return "the completion marker lists no files"
    for name, size in recorded.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were written"
    return None


def read_marker(folder: str | Path) -> dict[str, Any]:
    return json.loads((Path(folder) / COMPLETE_MARKER).read_text())


def find_resume_checkpoint(work_dir: str | Path) -> Path | None:
    """The newest complete checkpoint; broken newer ones are skipped with a warning."""
    for step, folder in checkpoint_dirs(work_dir):
        problem = check_complete(folder)
        if problem is None:
            return folder
        logger.warning("skipping checkpoint %s (step %d): %s", folder, step, problem)
    return None


def remove_unusable(work_dir: str | Path, keep: Path | None) -> None:
    """Delete checkpoints newer than ``keep`` (broken ones: the run will write them again)."""
    keep_step = int(CHECKPOINT_PATTERN.match(keep.name).group(1)) if keep else -1
    for step, folder in checkpoint_dirs(work_dir):
        if step > keep_step:
            logger.warning("removing unusable checkpoint %s", folder)
            shutil.rmtree(folder, ignore_errors=True)


def rotate(work_dir: str | Path, keep: int) -> None:
    """Keep the ``keep`` newest complete checkpoints; older ones (complete or not) go."""
    complete = [folder for _, folder in checkpoint_dirs(work_dir) if check_complete(folder) is None]
    if len(complete) < keep:
        return
    oldest_kept = int(CHECKPOINT_PATTERN.match(complete[keep - 1].name).group(1))
    for step, folder in checkpoint_dirs(work_dir):
        if step < oldest_kept:
            shutil.rmtree(folder, ignore_errors=True)


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class CompleteCheckpoints(TrainerCallback):
    """After the Trainer saved ``checkpoint-<step>``: wait for all ranks, mark it complete, rotate."""

    def __init__(self, work_dir: str | Path, keep: int, info: dict[str, Any]):
        self.work_dir = Path(work_dir)
        self.keep = keep
        self.info = info

    def on_save(self, args, state, control, **kwargs):
        folder = self.work_dir / f"checkpoint-{state.global_step}"
        _barrier()  # every rank has written its RNG state / DeepSpeed shard
        if state.is_world_process_zero:
            mark_complete(folder, {**self.info, "global_step": state.global_step})
            rotate(self.work_dir, self.keep)
            logger.info("checkpoint %s complete", folder)
        _barrier()  # nobody runs ahead into a folder that is being rotated
        return control
