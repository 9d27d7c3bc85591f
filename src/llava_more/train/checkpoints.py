"""What a stage's work dir holds: resumable checkpoints and the finished model, and who may use them.

The HF Trainer writes ``checkpoint-<step>/`` file by file (model, optimizer, scheduler, RNG states,
DeepSpeed shards), so a job killed while saving leaves a half-written folder. A Trainer callback
(``trainer.CompleteCheckpoints``) writes ``COMPLETE_MARKER`` into the folder only after every rank
finished writing; the marker lists each file with its size, so a folder whose marker is missing or whose
files were truncated afterwards is recognised as broken, skipped with a warning, and the previous
complete checkpoint is used. A checkpoint serves only the run that wrote it: the marker records
the run's ``fingerprint`` (stage, recipe, data, initial model), and ``choose_checkpoint`` resumes the
newest complete checkpoint of this very run, setting aside those of another.

The finished model is exported to ``<work dir>/final`` (with a marker too) and then placed at the
rule's output by hard links: the output is complete the moment it appears (one rename) and costs no
second copy of the weights. The work dir keeps its links, so a finished training survives the
deletion of its output: Snakemake deletes a job's output before a rerun, for example when
``--rerun-incomplete`` follows an interrupted driver, which calls an output incomplete even when the
training had finished. A rerun of the same recipe on the same data and initial model (the same
fingerprint) places the kept export again in seconds and trains nothing; any other fingerprint
trains anew, and its export replaces the kept one. Where the output and the work dir cannot share
files (different filesystems) the export is moved instead and no copy is kept. Deleting the work
dir frees what the kept export holds once the output is gone, and makes the next run start over.

Light on purpose (no torch, no transformers): the launcher looks for a reusable export before it
starts any worker.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from llava_more.errors import DataError, UserError
from llava_more.train.config import TrainConfig

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "llava_more_complete.json"
FINAL_DIR = "final"
INTERRUPTED_MARKER = "INTERRUPTED"  # written when a stop request ended the run (the launcher then exits 75)
# Fields that do not change what a step computes: a checkpoint written with other values still
# resumes (an out-of-memory stage, say, can be resumed with fused_loss switched on).
RUN_ONLY_FIELDS = ("num_workers", "keep_checkpoints", "logging_steps", "save_every_steps", "fused_loss")
# Errors of a hard link that a move can still get around.
_NO_LINKS = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS)
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


# ---------------------------------------------------------------------------- which run a checkpoint serves


def _file_identity(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def fingerprint(stage: int, cfg: TrainConfig, data_json: Path, init_dir: Path) -> dict[str, Any]:
    """What a checkpoint or a kept export must share with this run to serve it: stage, recipe, data
    file and initial weights (a rerun of stage 1 makes stage 2's old checkpoints stale)."""
    if not data_json.is_file():
        raise DataError(f"{data_json}: training data not found; run the step that creates it first")
    if not init_dir.is_dir():
        raise UserError(f"{init_dir}: model bundle folder not found; run the step that creates it first")
    recipe = {k: v for k, v in cfg.flat().items() if k not in RUN_ONLY_FIELDS}
    data = {"path": str(data_json.resolve()), "file": _file_identity(data_json)}
    init = {
        "path": str(init_dir.resolve()),
        "files": {p.name: _file_identity(p) for p in sorted(init_dir.glob("*.safetensors"))},
    }
    digest = hashlib.sha256(json.dumps([stage, recipe, data, init], sort_keys=True).encode())
    return {"stage": stage, "recipe": recipe, "data": data, "init": init, "digest": digest.hexdigest()[:16]}


def fingerprint_changes(written: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, for the log (``recipe.lr``, ``data``...)."""
    changed = [key for key in ("stage", "recipe", "data", "init") if written.get(key) != expected.get(key)]
    old, new = written.get("recipe", {}), expected.get("recipe", {})
    return changed + sorted(f"recipe.{key}" for key in set(old) | set(new) if old.get(key) != new.get(key))


def choose_checkpoint(work_dir: Path, expected: dict[str, Any], is_main: bool) -> Path | None:
    """The newest complete checkpoint of this very run, or None to start from the initial model.

    The main process removes broken checkpoints newer than it, and moves checkpoints written by a
    different run (other recipe, data or initial model) to ``stale/`` rather than resuming them.
    """
    checkpoint = find_resume_checkpoint(work_dir)
    if checkpoint is not None:
        written = read_marker(checkpoint).get("fingerprint", {})
        if written.get("digest") != expected["digest"]:
            changed = fingerprint_changes(written, expected)
            if is_main:
                stale = (
                    work_dir
                    / "stale"
                    / f"{written.get('digest', 'unknown')}-{time.strftime('%Y%m%d-%H%M%S')}"
                )
                stale.mkdir(parents=True)
                for _, folder in checkpoint_dirs(work_dir):
                    folder.rename(stale / folder.name)
                logger.warning(
                    "%s: its checkpoints come from a different run (%s differ); moved them to %s and "
                    "starting over", work_dir, ", ".join(changed) or "fingerprint", stale,
                )  # fmt: skip
            return None
    if is_main:
        remove_unusable(work_dir, keep=checkpoint)
    return checkpoint


# ---------------------------------------------------------------------------- the finished model


def keep_export(staged: Path, work_dir: Path, expected: dict[str, Any]) -> Path:
    """Make the bundle written to ``staged`` the work dir's kept export (replacing an older one)."""
    mark_complete(staged, {"fingerprint": expected})
    final = work_dir / FINAL_DIR
    previous = work_dir / f".{FINAL_DIR}.previous-{os.getpid()}"
    if final.exists():
        if check_complete(final) is None:
            written = read_marker(final).get("fingerprint", {})
            logger.info(
                "%s: replacing the model kept from another run (%s differ)",
                final, ", ".join(fingerprint_changes(written, expected)) or "fingerprint",
            )  # fmt: skip
        final.rename(previous)
    staged.rename(final)
    shutil.rmtree(previous, ignore_errors=True)
    return final


def place_export(final: Path, out_dir: Path) -> None:
    """Put the kept export at ``out_dir`` atomically: hard links (no second copy), else a move."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.linking-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for name in _file_sizes(final):
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            os.link(final / name, staging / name)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        if err.errno not in _NO_LINKS:
            raise
        logger.warning(
            "%s and %s cannot share files (%s): moving the model instead, so no copy is kept in the work "
            "dir and a rerun after the output is deleted trains again", final, out_dir, err.strerror,
        )  # fmt: skip
        shutil.move(final, staging)
        (staging / COMPLETE_MARKER).unlink(missing_ok=True)
    previous = out_dir.parent / f".{out_dir.name}.previous-{os.getpid()}"
    if out_dir.exists():
        out_dir.rename(previous)
    staging.rename(out_dir)
    shutil.rmtree(previous, ignore_errors=True)


def reusable_export(work_dir: Path, expected: dict[str, Any]) -> Path | None:
    """The kept export of this very run (same fingerprint, every file intact), or None."""
    final = Path(work_dir) / FINAL_DIR
    if not final.is_dir():
        return None
    if check_complete(final) is not None:  # cut short (or truncated since): this run trains
        return None
    # Another run's model (other recipe, data or initial model) stays until this run's replaces it.
    return final if read_marker(final).get("fingerprint", {}).get("digest") == expected["digest"] else None


def reuse_finished(work_dir: Path, out_dir: Path, expected: dict[str, Any]) -> bool:
    """Place this run's kept export at ``out_dir`` if there is one; True when nothing is left to train."""
    final = reusable_export(work_dir, expected)
    if final is None:
        return False
    place_export(final, out_dir)
    logger.info(
        "%s: this stage already finished with the same recipe, data and initial model; placed its model "
        "(kept in %s) at %s without training", work_dir, final, out_dir,
    )  # fmt: skip
    return True
