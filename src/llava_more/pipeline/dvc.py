"""``dvc.yaml`` generated from the Snakemake DAG, so the two can never describe different pipelines.

Snakemake is the planner: a forced dry run (``snakemake -n -p --forceall``) lists every job of a
study with its rule, wildcards, inputs, outputs and shell command. Each job becomes one DVC stage
with the same command, the same dependencies and outputs, and as ``params`` the keys its rule declares
(``llava_more.config.lineage``, the declaration the rule's Snakemake ``params`` come from), so
``dvc repro`` reruns what Snakemake reruns and ``dvc push`` / ``dvc pull`` move datasets and
checkpoints through a remote.

``dvc.yaml`` holds the stages of every study side by side (a job two studies share, such as a
dataset, is one stage), so any study can be reproduced, pushed and pulled by name from one remote:
``study_stages`` names a study's stages, the targets of ``dvc repro`` / ``push`` / ``pull`` / ``status``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llava_more.config import Params
from llava_more.config.lineage import dvc_keys
from llava_more.errors import UserError

# Rules with no command of their own (pure targets) are not stages.
TARGET_RULES = {"all"}


@dataclass
class Job:
    """One Snakemake job as the summary describes it."""

    rule: str
    cmd: str
    log: str
    inputs: list[str]
    outputs: list[str]
    wildcards: dict[str, str] = field(default_factory=dict)


# What the DAG is made of; planned in an empty copy so nothing in the checkout (a running
# workflow's lock, existing outputs) can change the plan.
WORKFLOW_FILES = ("Snakefile", "params.yaml", "workflow", "reference")
_JOB_HEADER = re.compile(r"^(?:local)?rule (\S+):$")
_JOB_FIELD = re.compile(r"^    (input|output|log|wildcards): (.*)$")


def parse_dry_run(text: str) -> list[Job]:
    """Jobs from ``snakemake -n -p --forceall`` output: one block per job, then its shell command."""
    jobs: list[Job] = []
    current: dict | None = None
    for line in text.splitlines():
        header = _JOB_HEADER.match(line)
        if header:
            current = {"rule": header[1], "input": "", "output": "", "log": "", "wildcards": ""}
            continue
        if current is None:
            continue
        fieldm = _JOB_FIELD.match(line)
        if fieldm:
            current[fieldm[1]] = fieldm[2]
        elif line.startswith("Shell command: ") or not line.strip():
            if line.startswith("Shell command: ") or current["rule"] in TARGET_RULES:
                if current["rule"] not in TARGET_RULES:
                    jobs.append(
                        Job(
                            rule=current["rule"],
                            cmd=line[len("Shell command: ") :],
                            log=current["log"],
                            inputs=[i.strip() for i in current["input"].split(",") if i.strip()],
                            outputs=[o.strip() for o in current["output"].split(",") if o.strip()],
                            wildcards=dict(
                                pair.strip().split("=", 1)
                                for pair in current["wildcards"].split(",")
                                if "=" in pair
                            ),
                        )
                    )
                current = None
    return jobs


def snakemake_jobs(study: str, root: Path = Path("."), snakemake: str | None = None) -> list[Job]:
    """Every job of ``study``'s DAG, planned from scratch, in Snakemake's order."""
    exe = snakemake or str(Path(sys.executable).with_name("snakemake"))
    env = {**os.environ, "LLAVA_MORE_CMD": "llava-more"}
    with tempfile.TemporaryDirectory(prefix="llava-more-dag-") as tmp:
        for name in WORKFLOW_FILES:
            src = Path(root) / name
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, Path(tmp) / name)
        proc = subprocess.run(
            [
                exe,
                "--cores",
                "1",
                "--dry-run",
                "--printshellcmds",
                "--forceall",
                "--config",
                f"study={study}",
            ],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        said = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
        raise UserError(f"snakemake could not build the DAG of study {study!r}: {said}")
    return parse_dry_run(proc.stdout + proc.stderr)


def _command(job: Job) -> str:
    """The job's command without its log redirection (DVC shows the output itself)."""
    cmd = job.cmd.strip()
    if job.log:
        cmd = re.sub(rf"\s*>\s*{re.escape(job.log)}\s+2>&1\s*$", "", cmd)
    return re.sub(r"\s+", " ", cmd)


def stage_name(job: Job) -> str:
    """A readable, DVC-valid stage name: the rule and the job's first output."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", job.outputs[0].replace("+", "plus")).strip("-")
    return f"{job.rule}-{slug}"


def dvc_stage(job: Job, params: Params, study: str) -> dict:
    stage: dict = {"cmd": _command(job)}
    if job.inputs:
        stage["deps"] = sorted(job.inputs)
    keys = dvc_keys(params, params.study(study), job.rule, job.wildcards)
    if keys:
        stage["params"] = keys
    stage["outs"] = sorted(job.outputs)
    return stage


def dvc_stages(jobs_by_study: dict[str, list[Job]], params: Params) -> dict[str, dict]:
    """One stage per job of every study; a job two studies share must be the same job in both."""
    stages: dict[str, dict] = {}
    for study, jobs in jobs_by_study.items():
        for job in jobs:
            name, stage = stage_name(job), dvc_stage(job, params, study)
            if name in stages and stages[name] != stage:
                raise UserError(
                    f"studies share the output {job.outputs[0]} but make it differently ({name}); give one of "
                    "them its own dataset name in params.yaml"
                )
            stages[name] = stage
    return stages


def study_stages(study: str, root: Path = Path(".")) -> list[str]:
    """The names of ``study``'s stages in dvc.yaml: the targets that reproduce, push or pull it."""
    return [stage_name(job) for job in snakemake_jobs(study, root)]


def _mtime(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


def pull_study(
    study: str, root: Path = Path("."), dvc: str | None = None, snakemake: str | None = None
) -> list[str]:
    """``dvc pull`` a study's stages, then tell Snakemake that what arrived is current.

    A pull writes files with new modification times, which Snakemake reads as "changed", and a clone
    has no Snakemake records of the params behind each output. ``snakemake --touch --forcerun`` on
    exactly the outputs the pull wrote fixes both: it marks them current, in DAG order, and records
    their params (so a later edit of params.yaml reruns what it changes). Outputs the pull left alone
    (a dataset another pulled study shares) are not touched, so the other study stays current too.
    Returns the outputs the pull wrote.
    """
    root = Path(root)
    jobs = snakemake_jobs(study, root)
    outputs = [out for job in jobs for out in job.outputs]
    before = {out: _mtime(root / out) for out in outputs}
    exe = Path(sys.executable)
    subprocess.run(
        [dvc or str(exe.with_name("dvc")), "pull", *(stage_name(job) for job in jobs)], cwd=root, check=True
    )
    written = [out for out in outputs if _mtime(root / out) != before[out]]
    if written:
        command = [snakemake or str(exe.with_name("snakemake")), "all", "--cores", "1", "--touch", "--quiet"]
        subprocess.run([*command, "--forcerun", *written, "--config", f"study={study}"], cwd=root, check=True)
    return written


HEADER = """\
# Generated by `llava-more dvc-yaml` from the Snakemake DAG of every study: do not edit by hand.
# `make repro|push|pull|status STUDY=<name>` run dvc on one study's stages (a plain `dvc repro` would
# build every study). A test checks that this file matches the Snakefile, so regenerate it
# (`make dvc.yaml`) after changing the workflow or a study. Run with the venv active.
"""


def render_dvc_yaml(params: Params, studies: list[str] | None = None, root: Path = Path(".")) -> str:
    """``dvc.yaml`` for ``studies`` (default: every study of params.yaml)."""
    jobs = {study: snakemake_jobs(study, root) for study in studies or list(params.studies)}
    stages = dvc_stages(jobs, params)
    # Snakemake lists a dry run's jobs in no fixed order: sort, so the file only changes with the DAG.
    return HEADER + yaml.safe_dump({"stages": dict(sorted(stages.items()))}, sort_keys=False, width=1000)
