"""Ctrl-C in training behaves like SLURM's SIGTERM: a checkpoint at the next step, one clear line, exit
75 (requeue), no traceback, and the rerun resumes to the weights of an uninterrupted run; a second
Ctrl-C stops at once. The CLI is started in its own process group and the group is signalled, as a
terminal does (a background job of a non-interactive shell ignores SIGINT: the trainer must not)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch

from llava_more.train import TrainConfig
from llava_more.train.checkpoints import COMPLETE_MARKER, check_complete, checkpoint_dirs
from llava_more.train.signals import STOP_FILE
from llava_more.train.trainer import INTERRUPTED_MARKER, train_stage
from tests.test_train_helpers import (
    bundle_weights,
    cli_env,
    make_bundle,
    make_dataset,
    train_cli,
    write_params,
)

# 16 image + 8 text-only samples, global batch 4: 6 steps per epoch, 3 epochs.
RECIPE = dict(
    epochs=3, global_batch=4, per_device_batch=2, lr=3e-3, warmup_ratio=0.1, max_length=512,
    save_every_steps=2, group_by_length=True, image_aspect_ratio="pad",
)  # fmt: skip
TOTAL_STEPS = 18
# Slow steps for the double Ctrl-C: 32 micro-batches of one sample each.
SLOW = {**RECIPE, "epochs": 1, "global_batch": 32, "per_device_batch": 1}


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start(command: list[str], *, sigint_ignored: bool = False) -> subprocess.Popen:
    """The CLI as the leader of its own process group (a terminal's foreground job)."""
    return subprocess.Popen(
        command, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, preexec_fn=ignore_sigint if sigint_ignored else None,
    )  # fmt: skip


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(
                f"training exited ({process.returncode}) before {path} appeared:\n{process.stdout.read()[-3000:]}"
            )
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"{path} did not appear in {timeout} s")
        time.sleep(0.01)


def read_until(process: subprocess.Popen, text: str, lines: list[str], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        lines.append(line)
        if text in line:
            return
        if time.monotonic() > deadline:
            break
    os.killpg(process.pid, signal.SIGKILL)
    pytest.fail(f"no {text!r} in the output:\n{''.join(lines)[-3000:]}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupt")
    init = make_bundle(root)
    data = make_dataset(root / "data", n_images=16, n_text=8)
    torch.set_num_threads(1)
    train_stage(2, init, data, data.parent, root / "ref-out", root / "ref-work", TrainConfig(**RECIPE))
    return {"root": root, "init": init, "data": data, "reference": bundle_weights(root / "ref-out")}


def assert_clean_stop(log: str, returncode: int, work: Path) -> int:
    assert returncode == 75, log[-3000:]
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-3000:]
    assert "SIGINT received" in log and "Ctrl-C again to stop at once, without a checkpoint" in log
    last = [line for line in log.splitlines() if line.startswith("llava-more train:")]
    assert len(last) == 1 and "stopped on SIGINT" in last[0] and "exit 75" in last[0], log[-3000:]
    stopped_at, folder = checkpoint_dirs(work)[0]
    assert check_complete(folder) is None and (work / INTERRUPTED_MARKER).is_file()
    return stopped_at


@pytest.mark.parametrize(
    "processes", [1, pytest.param(2, marks=pytest.mark.slow)], ids=["one-process", "torchrun-2"]
)
def test_ctrl_c_checkpoints_exits_75_and_the_rerun_resumes_to_the_same_weights(setup, processes):
    root = setup["root"] / f"ctrl-c-{processes}"
    root.mkdir()
    params = write_params(root, **RECIPE)
    out, work = root / "out", root / "work"
    extra = ["--nproc-per-node", str(processes)] if processes > 1 else []
    command = train_cli(setup["init"], setup["data"], params, out, work, *extra, stage=2)

    first = start(command, sigint_ignored=True)
    wait_for(work / "checkpoint-4" / COMPLETE_MARKER, first)
    os.killpg(first.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group
    log = first.communicate(timeout=300)[0]
    stopped_at = assert_clean_stop(log, first.returncode, work)
    assert 4 < stopped_at < TOTAL_STEPS and not out.exists()
    if processes > 1:
        assert {p.name for p in checkpoint_dirs(work)[0][1].iterdir()} >= {
            "rng_state_0.pth",
            "rng_state_1.pth",
        }
        assert not (work / STOP_FILE).exists() or (work / STOP_FILE).read_text().strip() == "SIGINT"

    second = subprocess.run(command, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=300)  # fmt: skip
    assert second.returncode == 0, second.stdout[-3000:]
    assert f"resuming from {work / f'checkpoint-{stopped_at}'}" in second.stdout
    reference, resumed = setup["reference"], bundle_weights(out)
    if processes == 1:  # one process resumes bit for bit
        assert not [name for name in reference if not torch.equal(reference[name], resumed[name])]
    else:  # two processes sum in another order (test_train_world_size.py): at a tenth of an Adam step
        for name in reference:
            torch.testing.assert_close(
                resumed[name], reference[name], rtol=1e-5, atol=RECIPE["lr"] / 10, msg=name
            )


@pytest.mark.parametrize(
    "processes", [1, pytest.param(2, marks=pytest.mark.slow)], ids=["one-process", "torchrun-2"]
)
def test_a_second_ctrl_c_stops_at_once_without_a_checkpoint(setup, processes):
    root = setup["root"] / f"twice-{processes}"
    root.mkdir()
    data = make_dataset(root / "data", n_images=32)
    params = write_params(root, **SLOW)
    out, work = root / "out", root / "work"
    extra = ["--nproc-per-node", str(processes)] if processes > 1 else []
    process = start(train_cli(setup["init"], data, params, out, work, *extra, stage=2))
    lines: list[str] = []
    read_until(process, "starting from", lines)  # just before the first (slow) step
    group = [process, *psutil.Process(process.pid).children(recursive=True)] if processes > 1 else [process]
    os.killpg(process.pid, signal.SIGINT)
    read_until(process, "SIGINT received", lines)
    started = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)
    log = "".join(lines) + process.communicate(timeout=60)[0]
    assert process.returncode == -signal.SIGINT, log[-3000:]
    assert time.monotonic() - started < 30
    assert "SIGINT again: stopping" in log and "without a checkpoint" in log and "Traceback" not in log, log[
        -3000:
    ]
    assert not checkpoint_dirs(work) and not out.exists()
    time.sleep(0.5)
    assert not [
        p for p in group[1:] if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    ]  # no worker left
