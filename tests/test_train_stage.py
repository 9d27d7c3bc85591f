"""train_stage on tiny twins: what each stage trains, the loss going down, LoRA export, resume after a
signal and after a corrupted checkpoint (in this process; test_train_resume.py does it through the CLI)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from llava_more.errors import ConfigError, TrainingInterrupted
from llava_more.train import TrainConfig
from llava_more.train.checkpoints import COMPLETE_MARKER, checkpoint_dirs
from llava_more.train.trainer import INTERRUPTED_MARKER, train_stage
from tests.test_train_helpers import bundle_weights, make_bundle, make_dataset

STAGE1 = TrainConfig(
    epochs=2, global_batch=4, per_device_batch=2, lr=1e-2, warmup_ratio=0.0, max_length=512,
    image_aspect_ratio="square", save_every_steps=2, seed=7,
)  # fmt: skip
STAGE2 = STAGE1.replace(lr=3e-3, image_aspect_ratio="pad", group_by_length=True)


def part(name: str) -> str:
    # saved names follow the original LLaVA layout: vision_tower.*, multi_modal_projector.*, language_model.*
    if "vision_tower." in name:
        return "vision"
    if "multi_modal_projector." in name:
        return "projector"
    return "llm"  # language model and LM head


def changed_parts(before: dict, after: dict) -> dict[str, set[bool]]:
    assert before.keys() == after.keys()
    parts: dict[str, set[bool]] = {}
    for name in before:
        parts.setdefault(part(name), set()).add(not torch.equal(before[name], after[name]))
    return parts


def tensorboard_losses(work: Path) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(work / "tensorboard"))
    events.Reload()
    assert "train/samples_per_second" in events.Tags()["scalars"]
    assert "train/learning_rate" in events.Tags()["scalars"]
    return [e.value for e in events.Scalars("train/loss")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage")
    torch.set_num_threads(1)
    return {
        "root": root,
        "init": make_bundle(root),
        "captions": make_dataset(root / "captions", n_images=12),
        "instruct": make_dataset(root / "instruct", n_images=6, n_text=2),
    }


def run(setup, stage: int, cfg: TrainConfig, name: str, data: str) -> tuple[Path, Path]:
    out, work = setup["root"] / f"{name}-out", setup["root"] / f"{name}-work"
    data_json = setup[data]
    train_stage(stage, setup["init"], data_json, data_json.parent, out, work, cfg)
    return out, work


@pytest.fixture(scope="module")
def stage1_reference(setup):
    return run(setup, 1, STAGE1, "s1", "captions")


def test_stage1_trains_only_the_projector(setup, stage1_reference):
    out, work = stage1_reference
    assert changed_parts(bundle_weights(setup["init"]), bundle_weights(out)) == {
        "vision": {False}, "llm": {False}, "projector": {True},
    }  # fmt: skip
    losses = tensorboard_losses(work)
    assert len(losses) == 6  # 12 samples / global batch 4 x 2 epochs
    assert sum(losses[-2:]) < sum(losses[:2])
    assert not checkpoint_dirs(work), "checkpoints are removed once the bundle is exported"
    assert (out / "llava_more.json").is_file()


def test_stage2_trains_llm_and_projector_and_the_loss_goes_down(setup):
    out, work = run(setup, 2, STAGE2.replace(epochs=6), "s2", "instruct")
    assert changed_parts(bundle_weights(setup["init"]), bundle_weights(out)) == {
        "vision": {False}, "llm": {True}, "projector": {True},
    }  # fmt: skip
    losses = tensorboard_losses(work)
    assert len(losses) == 12  # 8 samples / global batch 4 x 6 epochs
    first_epoch, last_epoch = sum(losses[:2]), sum(losses[-2:])  # the same samples, the same groups
    assert last_epoch < 0.8 * first_epoch, losses


@pytest.mark.parametrize("fused_loss", [False, True])  # the fused head under peft's wrapper too
def test_stage2_lora_is_merged_into_the_exported_model(setup, fused_loss):
    cfg = STAGE2.replace(lora_r=4, max_steps=2, fused_loss=fused_loss)
    out, _ = run(setup, 2, cfg, f"lora-{fused_loss}", "instruct")
    before, after = bundle_weights(setup["init"]), bundle_weights(out)
    assert before.keys() == after.keys(), "a plain model: no adapter or peft wrapper weights"
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert any(part(n) == "projector" for n in changed)
    assert any(part(n) == "llm" and ".layers." in n and n.endswith("proj.weight") for n in changed)
    assert not any(part(n) == "vision" for n in changed)
    assert not any("embed_tokens" in n or "norm" in n for n in changed)  # LoRA touches linear layers only


def test_lora_is_refused_in_stage1(setup):
    with pytest.raises(ConfigError, match="stage-2 option"):
        run(setup, 1, STAGE1.replace(lora_r=4), "lora1", "captions")


def sigterm_when(path: Path, signum: int = signal.SIGTERM, timeout: float = 60.0) -> threading.Thread:
    """Send this process ``signum`` as soon as ``path`` exists (a checkpoint has been completed)."""

    def wait_and_signal():
        deadline = time.monotonic() + timeout
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=wait_and_signal, daemon=True)
    thread.start()
    return thread


def test_sigterm_checkpoints_then_a_corrupted_newest_checkpoint_is_skipped(setup, stage1_reference, caplog):
    out, work = setup["root"] / "sig-out", setup["root"] / "sig-work"
    data = setup["captions"]
    # 3 steps per epoch: checkpoint 4 is inside the second epoch, SIGTERM saves another at step 5
    thread = sigterm_when(work / "checkpoint-4" / COMPLETE_MARKER)
    with pytest.raises(TrainingInterrupted, match="SIGTERM"):
        train_stage(1, setup["init"], data, data.parent, out, work, STAGE1)
    thread.join()
    steps = [step for step, _ in checkpoint_dirs(work)]
    assert steps == [5, 4], steps  # saved at the next step boundary; keep_checkpoints=2 rotated checkpoint-2
    assert (work / INTERRUPTED_MARKER).is_file() and not out.exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))

    # Corrupt the newest checkpoint: a truncated weights file.
    newest = work / f"checkpoint-{steps[0]}"
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="llava_more.train.checkpoints"):
        train_stage(1, setup["init"], data, data.parent, out, work, STAGE1)
    assert any(f"skipping checkpoint {newest}" in r.getMessage() and "model.safetensors" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    assert not (work / INTERRUPTED_MARKER).exists()
    reference = bundle_weights(stage1_reference[0])
    resumed = bundle_weights(out)
    assert all(torch.equal(reference[k], resumed[k]) for k in reference), "resume is not bitwise exact"


def test_missing_marker_means_incomplete(setup, stage1_reference, caplog):
    out, work = setup["root"] / "marker-out", setup["root"] / "marker-work"
    data = setup["captions"]
    thread = sigterm_when(work / "checkpoint-2" / COMPLETE_MARKER)
    with pytest.raises(TrainingInterrupted):
        train_stage(1, setup["init"], data, data.parent, out, work, STAGE1)
    thread.join()
    newest_step, newest = checkpoint_dirs(work)[0]
    (newest / COMPLETE_MARKER).unlink()  # as if killed while saving
    with caplog.at_level(logging.WARNING, logger="llava_more.train.checkpoints"):
        train_stage(1, setup["init"], data, data.parent, out, work, STAGE1)
    assert any("no completion marker" in r.getMessage() for r in caplog.records)
    reference = bundle_weights(stage1_reference[0])
    assert all(torch.equal(reference[k], v) for k, v in bundle_weights(out).items())


def test_checkpoints_of_another_recipe_are_set_aside(setup, caplog):
    data = setup["captions"]
    out, work = setup["root"] / "other-out", setup["root"] / "other-work"
    thread = sigterm_when(work / "checkpoint-2" / COMPLETE_MARKER, signal.SIGUSR1)  # SLURM's --signal=USR1@T
    with pytest.raises(TrainingInterrupted, match="SIGUSR1"):
        train_stage(1, setup["init"], data, data.parent, out, work, STAGE1)
    thread.join()
    written = [folder.name for _, folder in checkpoint_dirs(work)]
    assert written
    with caplog.at_level(logging.WARNING, logger="llava_more.train"):
        train_stage(1, setup["init"], data, data.parent, out, work, STAGE1.replace(lr=5e-3, max_steps=1))
    assert any("different run" in r.getMessage() and "recipe.lr" in r.getMessage() for r in caplog.records)
    (stale,) = (work / "stale").iterdir()
    assert sorted(p.name for p in stale.iterdir()) == sorted(written)  # kept, not resumed
    first_weights = bundle_weights(out)
    # The same run from scratch (nothing to resume) gives the same model: the old checkpoints were not used.
    train_stage(1, setup["init"], data, data.parent, setup["root"] / "fresh", setup["root"] / "fresh-work",
                STAGE1.replace(lr=5e-3, max_steps=1))  # fmt: skip
    fresh = bundle_weights(setup["root"] / "fresh")
    assert all(torch.equal(first_weights[k], fresh[k]) for k in fresh)
