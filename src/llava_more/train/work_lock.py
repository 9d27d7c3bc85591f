"""One run of a stage at a time per work directory.

Two jobs training the same stage into the same work directory would overwrite each other's
checkpoints. It happens on SLURM: a requeued job can be resubmitted by the executor while the
original still runs (the status race in ``profiles/slurm/README.md``), and a researcher may start
a stage by hand while the workflow runs it. ``llava-more train`` therefore holds an exclusive lock
on ``<work dir>/stage.lock`` for the whole stage, taken by the job's outermost process (the one
that starts torchrun or srun), so one lock stands for every process of the job.

A second job waits for the lock instead of failing: if Snakemake's outputs of a failed job were
deleted, the first job's finished model would go with them. When it gets the lock and the stage's
output appeared while it waited, the first job has done the work and the second ends successfully.

POSIX record locks (``fcntl.lockf``) are released by the kernel when their process dies, even on
SIGKILL, so there is no stale lock to clean up; they work on local disks and on NFS. Where the
filesystem refuses locks (some Lustre mounts), the stage runs unlocked, with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

LOCK_NAME = "stage.lock"
_BUSY = (errno.EACCES, errno.EAGAIN)


def holder_description() -> str:
    """Who holds the lock: host, pid and SLURM job, written into the lock file for the next in line."""
    job = os.environ.get("SLURM_JOB_ID")
    where = f"{socket.gethostname()} pid {os.getpid()}" + (f", SLURM job {job}" if job else "")
    return f"{where}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"


def _acquire(fd: int, path: Path) -> tuple[bool, bool]:
    """Take the lock on ``fd``, waiting if another run holds it: ``(locked, waited)``."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True, False
    except OSError as error:
        if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            logger.warning(
                "%s: this filesystem does not support file locks, so a second run of this stage at "
                "the same time would not be noticed", path.parent,
            )  # fmt: skip
            return False, False
        if error.errno not in _BUSY:
            raise
    holder = path.read_text().strip() or "another process"
    logger.warning(
        "%s is in use by another run of this stage (%s); waiting for it to end", path.parent, holder
    )
    fcntl.lockf(fd, fcntl.LOCK_EX)  # blocks; a signal still ends this process
    return True, True


@contextlib.contextmanager
def exclusive_work_dir(work_dir: str | Path) -> Iterator[bool]:
    """Hold the work directory's lock for the block; yields True when another run held it first."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
    try:
        locked, waited = _acquire(fd, path)
        if locked:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (holder_description() + "\n").encode(), 0)
        yield waited
    finally:
        os.close(fd)  # releases the lock
