"""A finished training is never thrown away: the real Snakemake driver, interrupted while the trainer
runs, waits for it to export and then calls its output incomplete; the rerun it suggests
(``--rerun-incomplete``, which deletes that output) places the kept model again, without a training
step, with identical weights. A rerun of another recipe, or on changed data, trains anew."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llava_more.train.checkpoints import COMPLETE_MARKER, FINAL_DIR, checkpoint_dirs, read_marker
from tests.test_train_helpers import cli_env, make_bundle, make_dataset, train_cli, write_params
from tests.workspace import BIN, tree_digest

RECIPE = dict(
    epochs=3, global_batch=4, per_device_batch=2, lr=3e-3, warmup_ratio=0.1, max_length=512,
    save_every_steps=2, group_by_length=True, image_aspect_ratio="pad",
)  # fmt: skip

# The shape of workflow/rules/train.smk's rule: one `llava-more train`, the bundle as a directory
# output, checkpoints and the kept export in a work dir outside the outputs.
SNAKEFILE = f"""
rule train:
    input: init="init", data="data/data.json"
    output: directory("runs/stage2")
    params: work="runs/work/stage2"
    log: "logs/train.log"
    shell:
        "OMP_NUM_THREADS=1 {sys.executable} -m llava_more train --stage 2 --init {{input.init}} --data {{input.data}}"
        " --image-root data --out {{output}} --work-dir {{params.work}} --params params.yaml --protocol test"
        " > {{log}} 2>&1"
"""


def snakemake(ws: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "snakemake"), "--cores", "1", *args], cwd=ws, env=cli_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)  # fmt: skip


def interrupt_driver_once_training_checkpointed(ws: Path, work: Path) -> str:
    """Runs the driver, sends it SIGINT once the trainer has saved checkpoint 2, returns its output."""
    # SIGINT handled as a terminal's Ctrl-C is, whatever this test process inherited (Python leaves an
    # inherited ignored SIGINT ignored, and snakemake would then never hear it).
    driver = subprocess.Popen([str(BIN / "snakemake"), "--cores", "1"], cwd=ws, env=cli_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.monotonic() + 300
    while not (work / "checkpoint-2" / COMPLETE_MARKER).exists() and time.monotonic() < deadline:
        assert driver.poll() is None, driver.stdout.read()
        time.sleep(0.02)
    os.kill(driver.pid, signal.SIGINT)
    driven = driver.communicate(timeout=600)[0]
    assert driver.returncode != 0, driven
    return driven


@pytest.mark.slow
def test_rerun_incomplete_after_an_interrupted_driver_reuses_the_finished_model(tmp_path):
    ws = tmp_path
    make_bundle(ws)
    make_dataset(ws / "data", n_images=16, n_text=8)
    write_params(ws, **RECIPE)
    (ws / "Snakefile").write_text(SNAKEFILE)
    out, work = ws / "runs/stage2", ws / "runs/work/stage2"

    # Ctrl-C to the driver alone (kill -INT <snakemake>): it waits for the running job to end.
    driven = interrupt_driver_once_training_checkpointed(ws, work)
    assert "Terminating processes on user request" in driven, driven
    trained_log = (ws / "logs/train.log").read_text()
    assert "step 18/18" in trained_log  # the trainer finished and exported meanwhile
    model = tree_digest(out)
    assert "model.safetensors" in model

    # Snakemake calls the finished output incomplete and suggests the rerun that deletes it.
    plain = snakemake(ws)
    assert plain.returncode != 0 and "--rerun-incomplete" in plain.stdout and "runs/stage2" in plain.stdout

    started = time.monotonic()
    rerun = snakemake(ws, "--rerun-incomplete")
    elapsed = time.monotonic() - started
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    log = (ws / "logs/train.log").read_text()
    assert "placed its model" in log and "without training" in log, log[-3000:]
    assert "step " not in log and "starting from" not in log and "resuming from" not in log
    assert tree_digest(out) == model  # the very same weights and files
    assert not checkpoint_dirs(work)
    # hard links: the output and the kept export are one copy on disk
    assert (out / "model.safetensors").stat().st_ino == (work / FINAL_DIR / "model.safetensors").stat().st_ino
    assert snakemake(ws, "--dry-run").stdout.count("Nothing to be done") == 1
    print(f"rerun with --rerun-incomplete: {elapsed:.1f} s (snakemake included)")


@pytest.mark.slow
def test_a_kept_model_serves_only_its_own_run(tmp_path, caplog):
    init = make_bundle(tmp_path)
    data = make_dataset(tmp_path / "data", n_images=4, n_text=2)
    out, work = tmp_path / "out", tmp_path / "work"

    def train(**recipe) -> str:
        params = write_params(tmp_path, **{**RECIPE, "epochs": 1, **recipe})
        result = subprocess.run(train_cli(init, data, params, out, work, stage=2), env=cli_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:]
        assert (out / "model.safetensors").is_file() and not (out / COMPLETE_MARKER).exists()
        return result.stdout

    first = train()
    assert "step 2/2" in first and "without training" not in first
    digest = read_marker(work / FINAL_DIR)["fingerprint"]["digest"]
    weights = tree_digest(out)

    # the output exists: a rerun replaces it with the kept model (no training either)
    assert "without training" in train() and tree_digest(out) == weights

    # another recipe (the output deleted, as Snakemake does before a job)
    other = train(lr=1e-3)
    assert "replacing the model kept from another run (recipe, recipe.lr differ)" in other
    assert "step 2/2" in other and tree_digest(out) != weights
    assert read_marker(work / FINAL_DIR)["fingerprint"]["digest"] != digest  # replaced, not kept beside it
    assert sorted(p.name for p in work.iterdir() if "final" in p.name) == [FINAL_DIR]

    # the same recipe on rewritten data trains again too
    records = json.loads(data.read_text())
    data.write_text(json.dumps(records[::-1]))
    assert "another run (data differ)" in train(lr=1e-3)
