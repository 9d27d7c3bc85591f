"""The whole pipeline for real: Snakemake and DVC over the same DAG, on a small finished study.

One scratch workspace whose `ci` study is shrunk (a few steps on a few dozen samples), used in order:

1. Snakemake runs `ci` to its tables; a rerun does nothing; deleting a checkpoint reruns only what
   depends on it.
2. `dvc repro` of `ci` rebuilds the same tables and weights, and agrees that it is done.
3. Editing one stage-2 hyperparameter: `snakemake -n` lists that stage's trainings and what depends on
   them, and DVC (`status`, `repro --dry`) names the same stages. Editing fields that change no result
   (micro-batch split, fused loss, checkpoint interval, evaluation batch size) reruns nothing.

Two more studies on the same data, `ci-b` and `ci-s2`, share a DVC remote in tests/test_pipeline_remote.py,
in a workspace of their own so that both modules run side by side.
"""

from __future__ import annotations

import copy
import csv
import json
import re
import resource
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from llava_more.pipeline.dvc import Job, stage_name
from tests.workspace import BIN, ROOT, make_workspace, run, tree_digest

SNAKEMAKE = [str(BIN / "snakemake"), "--profile", "profiles/local", "--cores", "2"]
DVC = str(BIN / "dvc")
EXP = "llama3.1-8b_clip-l-336_ci-lcs"
TABLE = Path("results/ci/tables/table1_llm.csv")
S2_SCALES = [48, 96]


def shrink(raw: dict) -> dict:
    """The ci study at a fraction of its size, and two more studies on the same data."""
    raw = copy.deepcopy(raw)
    raw["demo_vision"]["steps"] = 40
    raw["demo_benchmarks"]["size"] = 16
    raw["pretrain_data"]["ci-lcs"]["size"] = 48
    raw["instruct_data"]["ci-instruct"]["size"] = 48
    ci = raw["studies"]["ci"]
    ci["eval_samples"] = 6
    # The second and third studies evaluate their stage-2 models only (stage 1's are ci's to check).
    raw["studies"]["ci-b"] = {
        **copy.deepcopy(ci),
        "eval_untrained": False,
        "experiments": [{"llm": "phi4-mini", "vision": "clip-l-336"}],
    }
    s2 = {"llm": "llama3.1-8b", "vision": "clip-l-336", "s2": True, "s2_scales": S2_SCALES}
    raw["studies"]["ci-s2"] = {**copy.deepcopy(ci), "eval_untrained": False, "experiments": [s2]}
    return raw


def snakemake(ws: Path, study: str, *args: str) -> subprocess.CompletedProcess:
    return run([*SNAKEMAKE, *args, "--config", f"study={study}"], ws)


def planned(ws: Path, study: str = "ci") -> list[tuple[str, str]]:
    """(rule, first output) of every job a dry run would run, less `all`: empty when there is nothing to do."""
    out = snakemake(ws, study, "--dry-run").stdout
    if "Nothing to be done" in out:
        return []
    jobs = re.findall(r"^(?:local)?rule (\w+):\n((?:    .*\n)+)", out, re.M)
    assert jobs, f"a dry run with something to do lists its jobs:\n{out[-3000:]}"
    return sorted(
        (rule, re.search(r"^    output: ([^,\n]*)", body, re.M)[1]) for rule, body in jobs if rule != "all"
    )


def stages(ws: Path, study: str) -> list[str]:
    return run([str(BIN / "llava-more"), "dvc-stages", "--study", study], ws).stdout.split()


def dvc_status(ws: Path, study: str = "ci") -> str:
    return run([DVC, "status", *stages(ws, study)], ws).stdout


def make(ws: Path, target: str, study: str) -> subprocess.CompletedProcess:
    # `-o install`: this test session's venv is used as it is (VENV), never reinstalled.
    return run(["make", "-o", "install", target, f"STUDY={study}", f"VENV={BIN.parent}"], ws, timeout=1800)


def git_commit(ws: Path, message: str) -> None:
    run(["git", "add", "-A"], ws)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", message], ws)


def edit_params(ws: Path, edit) -> str:
    """Apply ``edit`` to the workspace's params.yaml; returns the text before, to restore it."""
    path = ws / "params.yaml"
    before = path.read_text()
    raw = yaml.safe_load(before)
    edit(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return before


def downstream(dvc_stages: dict[str, dict], changed: set[str]) -> set[str]:
    """``changed`` and every stage that depends, through deps and outs, on one of them."""
    out = set(changed)
    while True:
        produced = {o for name in out for o in dvc_stages[name]["outs"]}
        more = {
            name for name, stage in dvc_stages.items()
            if name not in out and any(d == o or d.startswith(o + "/") for d in stage.get("deps", []) for o in produced)
        }  # fmt: skip
        if not more:
            return out
        out |= more


def small_workspace(tmp_path_factory) -> Path:
    """A scratch workspace with the shrunk studies, its dvc.yaml and a DVC remote, committed."""
    ws = make_workspace(tmp_path_factory.mktemp("pipeline"))
    (ws / "params.yaml").write_text(
        yaml.safe_dump(shrink(yaml.safe_load((ws / "params.yaml").read_text())), sort_keys=False)
    )
    run([str(BIN / "llava-more"), "dvc-yaml"], ws)
    run([DVC, "remote", "add", "--force", "--default", "shared", str(tmp_path_factory.mktemp("remote"))], ws)
    git_commit(ws, "small studies")
    return ws


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return small_workspace(tmp_path_factory)


@pytest.mark.slow
def test_snakemake_runs_the_study_to_its_tables(workspace):
    done = snakemake(workspace, "ci", "all")
    table = (workspace / TABLE).read_text()
    assert EXP in table and "GQA" in table and "POPE" in table
    # Every cell has its interval from lmms-eval's per-sample logs; findings and report.html exist.
    rows = list(csv.DictReader(table.splitlines()))
    assert all(float(r["GQA_low"]) <= float(r["GQA"]) <= float(r["GQA_high"]) for r in rows)
    assert (workspace / "results/ci/findings.md").is_file()
    assert "<table" in (workspace / "results/ci/report.html").read_text()
    # The run ends on where the results are.
    last = done.stderr.strip().splitlines()[-4:]
    assert last[0] == "Results of study ci:"
    assert last[-1].startswith("  report:   results/ci/report.html")
    for stage in (1, 2):
        scores = json.loads((workspace / f"results/ci/eval/stage{stage}/{EXP}/scores.json").read_text())
        assert set(scores["columns"]) == {"GQA", "POPE"}
    meta = json.loads((workspace / f"runs/ci/stage2/{EXP}/llava_more.json").read_text())
    # The ci study sets system_prompt: false; the template id travels with the bundle to evaluation.
    assert meta["template"] == "llama3.1+no-system"


@pytest.mark.slow
def test_a_rerun_does_nothing(workspace):
    assert planned(workspace) == []


@pytest.mark.slow
def test_deleting_a_checkpoint_reruns_only_what_depends_on_it(workspace):
    shutil.rmtree(workspace / f"runs/ci/stage2/{EXP}")
    assert [rule for rule, _ in planned(workspace)] == ["evaluate", "report", "train"]
    snakemake(workspace, "ci", "all")
    assert planned(workspace) == []


@pytest.mark.slow
def test_dvc_repro_rebuilds_the_same_tables_and_agrees_it_is_done(workspace):
    snakemade_table = (workspace / TABLE).read_text()
    snakemade_model = tree_digest(workspace / f"runs/ci/stage2/{EXP}")
    for path in ("data", "runs", "results"):
        shutil.rmtree(workspace / path)
    run([DVC, "repro", *stages(workspace, "ci")], workspace, timeout=1800)
    assert (workspace / TABLE).read_text() == snakemade_table
    # Training is deterministic on the CPU: DVC's run gives the very same weights as Snakemake's.
    assert tree_digest(workspace / f"runs/ci/stage2/{EXP}") == snakemade_model
    assert "up to date" in dvc_status(workspace)
    assert planned(workspace) == []


@pytest.mark.slow
def test_a_stage2_hyperparameter_reruns_that_stage_and_downstream_in_both_tools(workspace):
    before = edit_params(workspace, lambda raw: raw["protocols"]["ci"]["stage2"].update(lr=3.0e-4))
    try:
        expected = [
            ("evaluate", f"results/ci/eval/stage2/{EXP}/scores.json"),
            ("report", "results/ci/tables"),
            ("train", f"runs/ci/stage2/{EXP}"),
        ]
        assert planned(workspace) == expected
        status = dvc_status(workspace)
        assert f"train-runs-ci-stage2-{EXP}:" in status and "protocols.ci.stage2.lr" in status, status
        assert f"train-runs-ci-stage1-{EXP}" not in status
        # DVC reruns the stages it finds changed and every stage downstream of them (through deps and
        # outs): the same jobs (a DVC stage is named after its job's rule and first output).
        dry = run([DVC, "repro", "--dry", *stages(workspace, "ci")], workspace).stdout
        changed = set(re.findall(r"^Running stage '([^']+)'", dry, re.M))
        assert changed == {f"train-runs-ci-stage2-{EXP}"}, dry
        rerun = downstream(yaml.safe_load((workspace / "dvc.yaml").read_text())["stages"], changed)
        assert rerun == {stage_name(Job(rule, "", "", [], [out])) for rule, out in expected}
    finally:
        (workspace / "params.yaml").write_text(before)
    assert planned(workspace) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "edit",
    [
        lambda raw: raw["protocols"]["ci"]["stage2"].update(per_device_batch=8),
        lambda raw: raw["protocols"]["ci"]["stage1"].update(save_every_steps=2, fused_loss=True),
        lambda raw: raw["benchmark_suites"]["demo-small"].update(batch_size=4),
    ],
    ids=["micro-batch split", "checkpoints and fused loss", "evaluation batch size"],
)
def test_fields_that_change_no_result_rerun_nothing(workspace, edit):
    before = edit_params(workspace, edit)
    try:
        assert planned(workspace) == []
        assert "up to date" in dvc_status(workspace)
    finally:
        (workspace / "params.yaml").write_text(before)


def test_committed_dvc_yaml_is_generated_from_the_current_workflow():
    committed = (ROOT / "dvc.yaml").read_text()
    fresh = run([str(BIN / "llava-more"), "dvc-yaml", "--out", "-"], ROOT).stdout
    assert fresh == committed, "dvc.yaml is stale: run `make dvc.yaml` and commit it"


def test_dvc_stages_are_the_snakemake_jobs_of_every_study():
    """Checked against Snakemake's own summary, a different view of the DAG than the generator's."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    dvc_outs = {out for stage in dvc.values() for out in stage["outs"]}
    studies = yaml.safe_load((ROOT / "params.yaml").read_text())["studies"]
    snake_outs: set[str] = set()
    for study in studies:
        summary = run(
            [str(BIN / "snakemake"), "--cores", "1", "--detailed-summary", "--config", f"study={study}"], ROOT
        )
        snake_outs |= {line.split("\t")[0] for line in summary.stdout.splitlines()[1:] if line.strip()}
    assert dvc_outs == snake_outs
    # One stage per job: every stage has its own outputs (a job two studies share is one stage).
    assert sum(len(stage["outs"]) for stage in dvc.values()) == len(dvc_outs)


def test_paper_dag_dry_run_lists_every_job_quickly():
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = run([str(BIN / "snakemake"), "--cores", "1", "--dry-run", "--config", "study=paper"], ROOT).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the dry run, not wall time: the same on a machine busy with other tests
    elapsed = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", out[out.index("job ") :], re.M)}
    # 29 trainings (stage 1 + stage 2 each), 23 initial models, 29 evaluations, one report.
    assert counts["train"] == 58
    assert counts["init_model"] == 23
    assert counts["evaluate"] == 29
    assert counts["report"] == 1
    # LCS, LAION, Recap and their mix; LLaVA-665K; each validated.
    assert counts["fetch_pretrain_data"] == 4 and counts["fetch_instruct_data"] == 1
    assert counts["validate_data"] == 5
    assert elapsed < 10, f"dry run of the paper DAG took {elapsed:.1f} CPU seconds"
