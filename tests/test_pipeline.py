"""The whole pipeline for real, on the smallest study (`ci`): Snakemake, then DVC over the same DAG.

One scratch workspace, used in order: Snakemake runs the study to its tables; a rerun does nothing;
deleting a checkpoint reruns only what depends on it; `dvc repro` rebuilds the same tables; `dvc push`,
wiping every artifact and the cache, and `dvc pull` restore identical checkpoints, after which
Snakemake (with the documented `--touch`) has nothing to do.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

from tests.workspace import BIN, ROOT, make_workspace, run, tree_digest, tree_digest_file

STUDY = "ci"
SNAKEMAKE = [str(BIN / "snakemake"), "--profile", "profiles/local", "--cores", "2"]
EXP = "llama3.1-8b_clip-l-336_ci-lcs"
TABLE = Path(f"results/{STUDY}/tables/table1_llm.csv")


def snakemake(ws: Path, *args: str, check: bool = True):
    return run([*SNAKEMAKE, *args, "--config", f"study={STUDY}"], ws, check=check)


def jobs_planned(ws: Path) -> dict[str, int]:
    """Job counts of a dry run (empty when there is nothing to do)."""
    out = snakemake(ws, "--dry-run").stdout
    if "Nothing to be done" in out:
        return {}
    table = out[out.index("job "): out.index("total")]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("pipeline"))


@pytest.mark.slow
def test_snakemake_runs_the_study_to_its_tables(workspace):
    done = snakemake(workspace, "all")
    table = (workspace / TABLE).read_text()
    assert EXP in table and "GQA" in table and "POPE" in table
    # Every cell has its interval from lmms-eval's per-sample logs; findings and report.html exist.
    rows = list(csv.DictReader(table.splitlines()))
    assert all(float(r["GQA_low"]) <= float(r["GQA"]) <= float(r["GQA_high"]) for r in rows)
    assert (workspace / f"results/{STUDY}/findings.md").is_file()
    assert "<table" in (workspace / f"results/{STUDY}/report.html").read_text()
    # The run ends on where the results are.
    last = done.stderr.strip().splitlines()[-4:]
    assert last[0] == f"Results of study {STUDY}:"
    assert last[-1].startswith(f"  report:   results/{STUDY}/report.html")
    for stage in (1, 2):
        scores = yaml.safe_load((workspace / f"results/{STUDY}/eval/stage{stage}/{EXP}/scores.json").read_text())
        assert set(scores["columns"]) == {"GQA", "POPE"}
    meta = json.loads((workspace / f"runs/{STUDY}/stage2/{EXP}/llava_more.json").read_text())
    # The ci study sets system_prompt: false; the template id travels with the bundle to evaluation.
    assert meta["template"] == "llama3.1+no-system"


@pytest.mark.slow
def test_a_rerun_does_nothing(workspace):
    assert jobs_planned(workspace) == {}


@pytest.mark.slow
def test_deleting_a_checkpoint_reruns_only_what_depends_on_it(workspace):
    shutil.rmtree(workspace / f"runs/{STUDY}/stage2/{EXP}")
    assert jobs_planned(workspace) == {"train": 1, "evaluate": 1, "report": 1, "all": 1}
    snakemake(workspace, "all")
    assert jobs_planned(workspace) == {}


@pytest.mark.slow
def test_dvc_repro_rebuilds_the_same_tables_and_push_pull_restores_checkpoints(workspace, tmp_path):
    snakemade_table = (workspace / TABLE).read_text()
    snakemade_model = tree_digest(workspace / f"runs/{STUDY}/stage2/{EXP}")
    run([str(BIN / "llava-more"), "dvc-yaml", "--study", STUDY], workspace)
    for path in ("data", "runs", "results"):
        shutil.rmtree(workspace / path)
    run([str(BIN / "dvc"), "repro"], workspace)
    assert (workspace / TABLE).read_text() == snakemade_table
    # Training is deterministic on the CPU: DVC's run gives the very same weights as Snakemake's.
    assert tree_digest(workspace / f"runs/{STUDY}/stage2/{EXP}") == snakemade_model

    remote = tmp_path / "remote"
    run([str(BIN / "dvc"), "remote", "add", "--force", "--default", "test", str(remote)], workspace)
    run([str(BIN / "dvc"), "push"], workspace)
    # Every declared output (datasets, model bundles, scores, tables), file or folder. Scratch that
    # is not an output (resumable checkpoints, lmms-eval's raw logs) is not DVC's to keep.
    outs = sorted({o for st in yaml.safe_load((workspace / "dvc.yaml").read_text())["stages"].values() for o in st["outs"]})
    assert any(o.startswith(f"runs/{STUDY}/stage2/") for o in outs)

    def digests() -> dict[str, dict[str, str]]:
        return {o: tree_digest(workspace / o) if (workspace / o).is_dir() else tree_digest_file(workspace / o) for o in outs}

    before = digests()
    for path in ("data", "runs", "results", ".dvc/cache", ".snakemake"):
        shutil.rmtree(workspace / path, ignore_errors=True)
    run([str(BIN / "dvc"), "pull"], workspace)
    assert digests() == before

    # A pull resets modification times; the documented --touch makes Snakemake agree it is all done.
    run([*SNAKEMAKE, "--touch", "all", "--config", f"study={STUDY}"], workspace)
    assert jobs_planned(workspace) == {}


def test_committed_dvc_yaml_is_generated_from_the_current_workflow():
    committed = (ROOT / "dvc.yaml").read_text()
    fresh = run([str(BIN / "llava-more"), "dvc-yaml", "--out", "-"], ROOT).stdout
    assert fresh == committed, "dvc.yaml is stale: run `make dvc.yaml` and commit it"


def test_dvc_stages_are_the_snakemake_jobs():
    """Checked against Snakemake's own summary, a different view of the DAG than the generator's."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    dvc_outs = {out for stage in dvc.values() for out in stage["outs"]}
    summary = run([str(BIN / "snakemake"), "--cores", "1", "--detailed-summary"], ROOT).stdout
    snake_outs = {line.split("\t")[0] for line in summary.splitlines()[1:] if line.strip()}
    assert dvc_outs == snake_outs
    # One stage per job: the job-stats table of a forced dry run counts them (less the `all` target).
    plan = run([str(BIN / "snakemake"), "--cores", "1", "--dry-run", "--forceall"], ROOT).stdout
    total = int(re.search(r"^total\s+(\d+)$", plan, re.M)[1])
    assert len(dvc) == total - 1


def test_paper_dag_dry_run_lists_every_job_quickly():
    start = time.monotonic()
    out = run([str(BIN / "snakemake"), "--cores", "1", "--dry-run", "--config", "study=paper"], ROOT).stdout
    elapsed = time.monotonic() - start
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", out[out.index("job "):], re.M)}
    # 29 trainings (stage 1 + stage 2 each), 23 initial models, 29 evaluations, one report.
    assert counts["train"] == 58
    assert counts["init_model"] == 23
    assert counts["evaluate"] == 29
    assert counts["report"] == 1
    # LCS, LAION, Recap and their mix; LLaVA-665K; each validated.
    assert counts["fetch_pretrain_data"] == 4 and counts["fetch_instruct_data"] == 1
    assert counts["validate_data"] == 5
    assert elapsed < 10, f"dry run of the paper DAG took {elapsed:.1f}s"
