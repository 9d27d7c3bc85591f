"""Two CPU processes (torchrun, gloo) with DeepSpeed ZeRO-2 and ZeRO-3 (the latter with the fused LM head
and loss) train like one process with the same global batch: the same loss curve and the same final weights, within float tolerance,
on a set whose last step holds one sample (one rank trains it, the other runs an empty micro-batch); and a
SIGTERM to the launcher checkpoints every rank and exits 75."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from llava_more.train import TrainConfig
from llava_more.train.checkpoints import COMPLETE_MARKER, check_complete, checkpoint_dirs
from llava_more.train.trainer import train_stage
from tests.test_train_helpers import (
    bundle_weights,
    cli_env,
    make_bundle,
    make_dataset,
    train_cli,
    write_params,
)

pytestmark = pytest.mark.slow

# 13 image + 4 text-only samples; global batch 4: 1 process = 2 per device x 2 accumulation steps,
# 2 processes = 2 per device x 1. Length grouping puts the text-only samples into a step of their own;
# the last step of the epoch holds the one sample left.
RECIPE = dict(
    epochs=1, global_batch=4, per_device_batch=2, lr=3e-3, warmup_ratio=0.0, max_length=512,
    save_every_steps=2, group_by_length=True, image_aspect_ratio="pad",
)  # fmt: skip


def tensorboard_losses(work: Path) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(work / "tensorboard"))
    events.Reload()
    return [e.value for e in events.Scalars("train/loss")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    init = make_bundle(root)
    data = make_dataset(root / "data", n_images=13, n_text=4)
    torch.set_num_threads(1)
    train_stage(2, init, data, data.parent, root / "single-out", root / "single-work", TrainConfig(**RECIPE))
    return {"root": root, "init": init, "data": data}


@pytest.mark.parametrize(
    "zero, layout",
    # ZeRO-3 with the fused head: the head's weight is gathered because it is still called as a module
    [("zero2", {}), ("zero3", {"fused_loss": True}), ("none", {"packing": True, "micro_tokens": 600})],
    ids=["zero2", "zero3-fused-loss", "ddp-packed-token-budget"],
)
def test_two_processes_match_one(setup, zero, layout):
    root = setup["root"] / zero
    root.mkdir()
    params = write_params(root, **RECIPE, deepspeed=zero, **layout)
    out, work = root / "out", root / "work"
    env = cli_env()
    # DeepSpeed compiles its CPU communication op on first use (~2 min); the cache makes it once.
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "llava-more" / "torch_extensions"))
    command = train_cli(setup["init"], setup["data"], params, out, work, "--nproc-per-node", "2", stage=2)
    result = subprocess.run(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=480
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert "torchrun: 1 node x 2 process(es)" in result.stdout
    assert ("LM head and loss: fused, chunked" in result.stdout) == bool(layout.get("fused_loss"))
    if not layout.get("packing"):
        assert "global batch 4 = 2 per device x 1 accumulation step(s) x 2 device(s)" in result.stdout
    else:  # each rank's share of a step (2 samples, about 250 tokens) fits one packed micro-batch
        budget_line = (
            "global batch 4 = 1 micro-batch(es) per step x 2 device(s), each within the token budget of 600"
        )
        assert budget_line in result.stdout
        assert "LLM attention: varlen_sdpa" in result.stdout

    single = tensorboard_losses(setup["root"] / "single-work")
    double = tensorboard_losses(work)
    assert len(single) == len(double) == 5
    torch.testing.assert_close(torch.tensor(double), torch.tensor(single), rtol=1e-4, atol=1e-5)
    assert double[-1] < double[0]

    reference, trained = bundle_weights(setup["root"] / "single-out"), bundle_weights(out)
    assert reference.keys() == trained.keys()  # ZeRO-3's shards were gathered into one full model
    # Adam turns float-level gradient differences into weight differences of up to a step (about lr)
    # where a gradient is tiny: compare at a tenth of one step.
    for name in reference:
        torch.testing.assert_close(
            trained[name], reference[name], rtol=1e-4, atol=RECIPE["lr"] / 10, msg=name
        )
    assert os.path.isdir(work / "tensorboard")


def test_sigterm_to_the_launcher_checkpoints_all_ranks_and_resumes(setup):
    """SLURM signals the `llava-more train` process; torchrun forwards it, every rank stops at the same
    step, the checkpoint is complete, the command exits 75, and a restart finishes the run."""
    recipe = {**RECIPE, "epochs": 3}
    root = setup["root"] / "sigterm"
    root.mkdir()
    train_stage(2, setup["init"], setup["data"], setup["data"].parent, root / "ref-out", root / "ref-work",
                TrainConfig(**recipe))  # fmt: skip
    params = write_params(root, **recipe, deepspeed="zero2")
    out, work = root / "out", root / "work"
    env = cli_env()
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "llava-more" / "torch_extensions"))
    command = train_cli(setup["init"], setup["data"], params, out, work, "--nproc-per-node", "2", stage=2)
    run = dict(env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    first = subprocess.Popen(command, **run)
    marker = work / "checkpoint-4" / COMPLETE_MARKER
    deadline = time.monotonic() + 300
    while not marker.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    first.send_signal(signal.SIGTERM)
    log = first.communicate(timeout=300)[0]
    assert first.returncode == 75, log[-4000:]
    stopped_at, folder = checkpoint_dirs(work)[0]
    assert 4 < stopped_at < 15 and check_complete(folder) is None
    assert {p.name for p in folder.iterdir()} >= {"rng_state_0.pth", "rng_state_1.pth"}  # both ranks saved
    assert not out.exists()

    second = subprocess.run(command, timeout=300, **run)
    assert second.returncode == 0, second.stdout[-4000:]
    assert f"resuming from {folder}" in second.stdout
    reference, trained = bundle_weights(root / "ref-out"), bundle_weights(out)
    # Adam turns float-level gradient differences into weight differences of up to a step (about lr)
    # where a gradient is tiny: compare at a tenth of one step.
    for name in reference:
        torch.testing.assert_close(
            trained[name], reference[name], rtol=1e-4, atol=RECIPE["lr"] / 10, msg=name
        )
