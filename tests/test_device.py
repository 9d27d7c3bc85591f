"""The one device decision (llava_more.device): from what the job was given, logged, never silent."""

from __future__ import annotations

import subprocess
import sys

import pytest

from llava_more.device import decide_device, gpus_given, resolve_device
from llava_more.errors import UserError


@pytest.mark.parametrize(
    "env, given",
    [
        ({}, None),
        ({"CUDA_VISIBLE_DEVICES": ""}, None),
        ({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, None),
        ({"CUDA_VISIBLE_DEVICES": "-1"}, None),
        ({"CUDA_VISIBLE_DEVICES": "0,1"}, "CUDA_VISIBLE_DEVICES=0,1"),
        ({"CUDA_VISIBLE_DEVICES": "GPU-5f3a"}, "CUDA_VISIBLE_DEVICES=GPU-5f3a"),
        ({"SLURM_GPUS_ON_NODE": "4"}, "SLURM_GPUS_ON_NODE=4"),
        ({"SLURM_GPUS_ON_NODE": "0"}, None),
    ],
)
def test_what_the_scheduler_gave_the_job(env, given):
    assert gpus_given(env) == given


def test_a_job_without_gpus_runs_on_the_cpu_and_says_so(caplog):
    caplog.set_level("INFO", logger="llava_more.device")
    assert resolve_device("auto", purpose="evaluation", env={}) == "cpu"
    assert "evaluation runs on cpu (no GPU was given to this job)" in caplog.text


@pytest.mark.parametrize("env", [{"CUDA_VISIBLE_DEVICES": "0"}, {"SLURM_GPUS_ON_NODE": "2"}])
def test_gpus_given_but_unusable_is_an_error_naming_them_and_the_fix(env):
    # This machine's torch sees no CUDA device: a job that was given GPUs must not crawl on the CPU.
    with pytest.raises(
        UserError,
        match=r"stage-2 training was given GPU\(s\) \((CUDA_VISIBLE_DEVICES=0|"
        r"SLURM_GPUS_ON_NODE=2)\) but torch cannot use CUDA.*LLAVA_MORE_DEVICE=cpu",
    ):
        decide_device("auto", purpose="stage-2 training", env=env)


def test_the_environment_override_runs_on_the_cpu_and_names_the_unused_gpus():
    env = {"CUDA_VISIBLE_DEVICES": "3", "LLAVA_MORE_DEVICE": "cpu"}
    assert decide_device(None, env=env) == (
        "cpu",
        "as asked; the job's GPUs (CUDA_VISIBLE_DEVICES=3) stay unused",
    )
    # An explicit --device wins over the environment.
    with pytest.raises(UserError, match=r"device 'cuda': torch sees 0 CUDA device\(s\) here"):
        decide_device("cuda", env=env)


@pytest.mark.parametrize("asked", ["cuda", "cuda:1", "gpu", "cuda:x", "mps"])
def test_unusable_or_unknown_devices_are_refused(asked):
    with pytest.raises(UserError, match=rf"device '{asked}'"):
        decide_device(asked, env={})


def test_evaluate_decides_and_logs_its_device_before_anything_else(tmp_path):
    command = [sys.executable, "-m", "llava_more", "evaluate", "--model", str(tmp_path / "none"), "--tasks",
               "demo_gqa", "--out", str(tmp_path / "out")]  # fmt: skip
    cpu = subprocess.run(command, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert "evaluation runs on cpu (no GPU was given to this job)" in cpu.stderr, cpu.stderr
    given = subprocess.run(
        command, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "0"}
    )
    assert given.returncode == 2 and "Traceback" not in given.stderr
    assert (
        given.stderr.count("\n") == 1
        and "evaluation was given GPU(s) (CUDA_VISIBLE_DEVICES=0)" in given.stderr
    )
