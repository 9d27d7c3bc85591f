"""Exact resume through the CLI: a SLURM-style SIGTERM (exit 75, checkpoint), then a SIGKILL mid-epoch,
then a clean finish must give the same weights, bit for bit, as one uninterrupted run."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from llava_more.train import TrainConfig
from llava_more.train.checkpoints import COMPLETE_MARKER, check_complete, checkpoint_dirs
from llava_more.train.trainer import INTERRUPTED_MARKER, train_stage
from tests.test_train_helpers import (
    bundle_weights,
    cli_env,
    make_bundle,
    make_dataset,
    train_cli,
    write_params,
)

# 16 image + 8 text-only samples, global batch 4 (2 per device x 2 accumulation): 6 steps per epoch, 3 epochs.
RECIPE = dict(
    epochs=3, global_batch=4, per_device_batch=2, lr=3e-3, warmup_ratio=0.1, max_length=512,
    save_every_steps=2, group_by_length=True, image_aspect_ratio="pad", seed=5,
)  # fmt: skip
TOTAL_STEPS = 18


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            out = process.stdout.read() if process.stdout else ""
            pytest.fail(f"training exited ({process.returncode}) before {path} appeared:\n{out[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{path} did not appear in {timeout} s")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    init = make_bundle(root)
    data = make_dataset(root / "data", n_images=16, n_text=8)
    params = write_params(root, **{k: v for k, v in RECIPE.items() if k != "seed"})
    # The uninterrupted reference, in this process (one thread, as the CLI runs below).
    torch.set_num_threads(1)
    cfg = TrainConfig(**RECIPE)
    train_stage(2, init, data, data.parent, root / "ref-out", root / "ref-work", cfg)
    return {"root": root, "init": init, "data": data, "params": params}


def test_sigterm_then_sigkill_then_resume_is_bitwise_exact(setup):
    root = setup["root"]
    out, work = root / "out", root / "work"
    command = train_cli(setup["init"], setup["data"], setup["params"], out, work, "--seed", "5", stage=2)
    run = dict(env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    # 1. SIGTERM (SLURM's warning) once checkpoint 4 exists: checkpoint at the next step, exit 75.
    first = subprocess.Popen(command, **run)
    wait_for(work / "checkpoint-4" / COMPLETE_MARKER, first)
    first.send_signal(signal.SIGTERM)
    log = first.communicate(timeout=240)[0]
    assert first.returncode == 75, log[-3000:]
    assert "SIGTERM" in log and "exit 75" in log
    stopped_at = checkpoint_dirs(work)[0][0]
    assert 5 <= stopped_at < TOTAL_STEPS and check_complete(work / f"checkpoint-{stopped_at}") is None
    assert (work / INTERRUPTED_MARKER).is_file() and not out.exists()

    # 2. Resume, and SIGKILL it in the middle of the second epoch (no chance to save anything).
    second = subprocess.Popen(command, **run)
    wait_for(work / "checkpoint-10" / COMPLETE_MARKER, second)
    second.send_signal(signal.SIGKILL)
    log = second.communicate(timeout=60)[0]
    assert second.returncode == -signal.SIGKILL
    assert f"resuming from {work / f'checkpoint-{stopped_at}'}" in log
    assert not out.exists()

    # 3. Resume to the end.
    third = subprocess.run(command, timeout=300, **run)
    assert third.returncode == 0, third.stdout[-3000:]
    assert "resuming from" in third.stdout
    assert "step 18/18" in third.stdout  # plain log lines when stdout is not a terminal

    reference, resumed = bundle_weights(root / "ref-out"), bundle_weights(out)
    assert reference.keys() == resumed.keys()
    different = [name for name in reference if not torch.equal(reference[name], resumed[name])]
    assert not different, f"resumed weights differ from the uninterrupted run: {different[:5]}"
