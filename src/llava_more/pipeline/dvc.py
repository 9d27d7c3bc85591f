"""``dvc.yaml`` generated from the Snakemake DAG, so the two can never describe different pipelines.

Snakemake is the planner: a forced dry run (``snakemake -n -p --forceall``) lists every job of a
study with its rule, inputs, outputs and shell command. Each job becomes one DVC stage with the same command, the same
dependencies and outputs, and the ``params.yaml`` keys that job reads, so ``dvc repro`` reruns exactly
what a change touches and ``dvc push`` / ``dvc pull`` move datasets and checkpoints through a remote.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from llava_more.config import Params
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


# What the DAG is made of; planned in an empty copy so nothing in the checkout (a running
# workflow's lock, existing outputs) can change the plan.
WORKFLOW_FILES = ("Snakefile", "params.yaml", "workflow")
_JOB_HEADER = re.compile(r"^(?:local)?rule (\S+):$")
_JOB_FIELD = re.compile(r"^    (input|output|log): (.*)$")


def parse_dry_run(text: str) -> list[Job]:
    """Jobs from ``snakemake -n -p --forceall`` output: one block per job, then its shell command."""
    jobs: list[Job] = []
    current: dict | None = None
    for line in text.splitlines():
        header = _JOB_HEADER.match(line)
        if header:
            current = {"rule": header[1], "input": "", "output": "", "log": ""}
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
                            cmd=line[len("Shell command: "):],
                            log=current["log"],
                            inputs=[i.strip() for i in current["input"].split(",") if i.strip()],
                            outputs=[o.strip() for o in current["output"].split(",") if o.strip()],
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
            [exe, "--cores", "1", "--dry-run", "--printshellcmds", "--forceall", "--config", f"study={study}"],
            cwd=tmp, env=env, capture_output=True, text=True,
        )
    if proc.returncode != 0:
        raise UserError(f"snakemake could not build the DAG of study {study!r}: {proc.stderr.strip()[-2000:]}")
    return parse_dry_run(proc.stdout + proc.stderr)


def _command(job: Job) -> str:
    """The job's command without its log redirection (DVC shows the output itself)."""
    cmd = job.cmd.strip()
    if job.log:
        cmd = re.sub(rf"\s*>\s*{re.escape(job.log)}\s+2>&1\s*$", "", cmd)
    return re.sub(r"\s+", " ", cmd)


def params_read_by(job: Job, params: Params, study: str) -> list[str]:
    """The params.yaml keys a job depends on, derived from where its output lives."""
    out = job.outputs[0]
    s = params.study(study)
    patterns = [
        (r"^data/pretrain/([^/]+)/raw$", lambda m: [f"pretrain_data.{m[1]}"]),
        (r"^data/instruct/([^/]+)/raw$", lambda m: [f"instruct_data.{m[1]}"]),
        (r"^data/(pretrain|instruct)/[^/]+/(clean\.json|quarantine\.jsonl)$", lambda m: ["validation"]),
        (r"^data/benchmarks/", lambda m: ["demo_benchmarks"]),
        (r"^runs/[^/]+/tokenizer$", lambda m: ["demo_tokenizer"]),
        (r"^runs/[^/]+/vision/", lambda m: ["demo_vision"]),
        (r"^runs/[^/]+/init/", lambda m: [f"studies.{study}.size"]),
        (r"^runs/[^/]+/stage([12])/", lambda m: [f"protocols.{s.protocol}.stage{m[1]}"]),
        (r"^results/[^/]+/eval/", lambda m: [f"studies.{study}.eval_samples", f"studies.{study}.benchmarks"]),
        (r"^results/[^/]+/(tables|plots)$", lambda m: [f"studies.{study}.tables"]),
    ]
    for pattern, keys in patterns:
        match = re.match(pattern, out)
        if match:
            return keys(match)
    return []


def stage_name(job: Job) -> str:
    """A readable, DVC-valid stage name: the rule and the job's first output."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", job.outputs[0].replace("+", "plus")).strip("-")
    return f"{job.rule}-{slug}"


def dvc_stages(jobs: list[Job], params: Params, study: str) -> dict:
    stages = {}
    for job in jobs:
        stage: dict = {"cmd": _command(job)}
        if job.inputs:
            stage["deps"] = sorted(job.inputs)
        keys = params_read_by(job, params, study)
        if keys:
            stage["params"] = keys
        stage["outs"] = sorted(job.outputs)
        stages[stage_name(job)] = stage
    return {"stages": stages}


HEADER = """\
# Generated by `llava-more dvc-yaml --study {study}` from the Snakemake DAG: do not edit by hand.
# `dvc repro` rebuilds the study; `dvc push` / `dvc pull` share datasets and checkpoints through the
# remote in .dvc/config. A test checks that this file matches the Snakefile, so regenerate it after
# changing the workflow or the study. Run with the venv active (`llava-more` on PATH).
"""


def render_dvc_yaml(study: str, params: Params, root: Path = Path(".")) -> str:
    body = dvc_stages(snakemake_jobs(study, root), params, study)
    return HEADER.format(study=study) + yaml.safe_dump(body, sort_keys=False, width=1000)
