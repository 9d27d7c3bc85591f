"""One run of a stage per work directory (train/work_lock.py): a second run waits, then finds the work done."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from llava_more.train.work_lock import LOCK_NAME, exclusive_work_dir
from tests.test_train_helpers import cli_env, make_bundle, make_dataset, train_cli, write_params

HOLD = (
    "import sys; from llava_more.train.work_lock import exclusive_work_dir\n"
    "with exclusive_work_dir(sys.argv[1]):\n"
    "    print('held', flush=True)\n"
    "    sys.stdin.readline()\n"
)


def hold_lock(work: Path) -> subprocess.Popen:
    """Another process (another job, to the kernel) holding ``work``'s lock until its stdin gets a line."""
    env = {**cli_env(), "SLURM_JOB_ID": "4242"}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(work)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def release(holder: subprocess.Popen) -> None:
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.wait(timeout=30) == 0


def test_a_second_run_waits_for_the_lock_and_learns_who_holds_it(tmp_path, caplog):
    work = tmp_path / "work"
    holder = hold_lock(work)
    assert "SLURM job 4242" in (work / LOCK_NAME).read_text()
    outcome: dict = {}

    def second_run() -> None:
        with exclusive_work_dir(work) as waited:
            outcome["waited"] = waited
            outcome["lock_text"] = (work / LOCK_NAME).read_text()

    with caplog.at_level("WARNING", logger="llava_more"):
        thread = threading.Thread(target=second_run)
        thread.start()
        time.sleep(1.0)
        assert thread.is_alive() and not outcome  # blocked while the first run holds the lock
        assert f"pid {holder.pid}, SLURM job 4242" in caplog.text and "waiting for it to end" in caplog.text
        release(holder)
        thread.join(timeout=30)
    assert outcome["waited"] is True
    assert f"pid {os.getpid()}" in outcome["lock_text"]  # the lock file now names its new holder


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    work = tmp_path / "work"
    holder = hold_lock(work)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    start = time.monotonic()
    with exclusive_work_dir(work) as waited:
        assert waited is False
    assert time.monotonic() - start < 5


def test_a_duplicate_train_job_ends_cleanly_once_the_first_has_written_the_model(tmp_path):
    init = make_bundle(tmp_path)
    data = make_dataset(tmp_path / "data", n_images=2, n_text=1)
    params = write_params(tmp_path, epochs=1, global_batch=2, per_device_batch=2, max_length=512)
    out, work = tmp_path / "out", tmp_path / "work"
    holder = hold_lock(work)  # the first job, still training
    duplicate = subprocess.Popen(
        train_cli(init, data, params, out, work), env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    lines = []
    for line in duplicate.stdout:
        lines.append(line)
        if "waiting for it to end" in line:
            break
    assert "SLURM job 4242" in lines[-1], "".join(lines)
    out.mkdir()  # the first job exports its model, then ends
    (out / "model.safetensors").write_bytes(b"the first job's model")
    release(holder)
    rest, _ = duplicate.communicate(timeout=120)
    assert duplicate.returncode == 0, "".join(lines) + rest
    assert "was written by the run this one waited for; nothing left to do" in rest
    assert (out / "model.safetensors").read_bytes() == b"the first job's model"
    assert not any(path.name.startswith("checkpoint-") for path in work.iterdir())
