"""What each job of a study's DAG is to the plan, and whether it is already built.

A job is a training stage, an evaluation or another job (data, initial models, imports, the
report), told apart by its first output: the paths ``llava_more.paths`` gives a stage's bundle and
an evaluation's scores. "Built" means a job's outputs exist in the checkout (Snakemake's mtime view
is not consulted), and, where ``dvc.lock`` exists, whether the DVC remote holds the version it
records.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llava_more import paths
from llava_more.config import Study
from llava_more.errors import UserError

JobKind = tuple[str, int | None, str | None]  # (stage1 | stage2 | eval | other, stage, experiment id)
OTHER: JobKind = ("other", None, None)


def job_kinds(study: Study) -> dict[str, JobKind]:
    """Output path -> kind for the jobs the cost model prices (a published study's bundles are
    imported, not trained: only its evaluations are priced)."""
    out = {}
    for exp in study.experiments:
        for stage in (1, 2):
            if not study.published:
                out[paths.stage_dir(study.name, stage, exp.id)] = (f"stage{stage}", stage, exp.id)
            out[paths.scores(study.name, stage, exp.id)] = ("eval", stage, exp.id)
    return out


def built_locally(outputs: Sequence[str], root: Path) -> bool:
    """Whether every one of a job's outputs exists in the checkout at ``root``."""
    return bool(outputs) and all((root / out).exists() for out in outputs)


def _dvc_lock_outputs(root: Path) -> dict[str, str]:
    import yaml

    try:
        lock = yaml.safe_load((root / "dvc.lock").read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(
            f"{root / 'dvc.lock'}: not valid YAML ({err}); rerun `dvc repro` or pass --no-remote"
        ) from None
    return {
        str(Path(out["path"])): out["md5"]
        for stage in (lock.get("stages") or {}).values()
        for out in stage.get("outs") or []
        if out.get("md5")
    }


def on_remote(jobs_outputs: Sequence[Sequence[str]], root: Path, notes: list[str]) -> list[bool | None]:
    """For each job (its outputs), whether the DVC remote holds the versions ``dvc.lock`` records;
    None for every job (and a note) when the remote cannot be asked."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    recorded = _dvc_lock_outputs(root)
    try:
        with Repo(str(root)) as repo:
            remote = repo.cloud.get_remote_odb(command="plan")
            held = []
            for outputs in jobs_outputs:
                hashes = [recorded.get(out) for out in outputs]
                held.append(all(h is not None and remote.exists(h) for h in hashes))
            return held
    except (DvcException, OSError) as err:
        notes.append(f"DVC remote not checked: {err}")
        return [None] * len(jobs_outputs)
