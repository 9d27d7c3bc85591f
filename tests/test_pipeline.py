"""The whole pipeline for real: Snakemake and DVC over the same DAG, on small finished studies.

One scratch workspace whose `ci` study is shrunk (a few steps on a few dozen samples) and joined by
`ci-b` (another LLM on the same data) and `ci-s2` (explicit S2 scales), used in order:

1. Snakemake runs `ci` to its tables; a rerun does nothing; deleting a checkpoint reruns only what
   depends on it.
2. `dvc repro` of `ci` rebuilds the same tables and weights, and agrees that it is done.
3. Editing one stage-2 hyperparameter: `snakemake -n` lists that stage's trainings and what depends on
   them, and DVC (`status`, `repro --dry`) names the same stages. Editing fields that change no result
   (micro-batch split, fused loss, checkpoint interval, evaluation batch size) reruns nothing.
4. Both `ci` and `ci-b` pushed to one DVC remote; a second clone pulls either by name (`make pull
   STUDY=...`) to identical artifacts, after which `snakemake -n` has nothing to do, `dvc status` is
   clean, and an edit there still reruns what it changes.
5. A study with explicit S2 scales trains a model with those scales.
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
from tests.workspace import BIN, ROOT, make_workspace, run, tree_digest, tree_digest_file

SNAKEMAKE = [str(BIN / "snakemake"), "--profile", "profiles/local", "--cores", "2"]
DVC = str(BIN / "dvc")
EXP = "llama3.1-8b_clip-l-336_ci-lcs"
EXP_B = "gemma2-2b_clip-l-336_ci-lcs"
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
    raw["studies"]["ci-b"] = {
        **copy.deepcopy(ci),
        "experiments": [{"llm": "gemma2-2b", "vision": "clip-l-336"}],
    }
    s2 = {"llm": "llama3.1-8b", "vision": "clip-l-336", "s2": True, "s2_scales": S2_SCALES}
    raw["studies"]["ci-s2"] = {**copy.deepcopy(ci), "experiments": [s2]}
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


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("pipeline"))
    (ws / "params.yaml").write_text(
        yaml.safe_dump(shrink(yaml.safe_load((ws / "params.yaml").read_text())), sort_keys=False)
    )
    run([str(BIN / "llava-more"), "dvc-yaml"], ws)
    run([DVC, "remote", "add", "--force", "--default", "shared", str(tmp_path_factory.mktemp("remote"))], ws)
    git_commit(ws, "small studies")
    return ws


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


@pytest.mark.slow
def test_two_studies_share_one_remote_and_a_clone_pulls_either_by_name(workspace, tmp_path):
    snakemake(workspace, "ci-b", "all")
    run(
        [DVC, "commit", "--force", *stages(workspace, "ci-b")], workspace
    )  # Snakemake built it; DVC records it
    for study in ("ci", "ci-b"):
        make(workspace, "push", study)
    git_commit(workspace, "dvc.lock of both studies")
    # Every declared output of a study (datasets, model bundles, scores, tables), file or folder.
    # Scratch that is not an output (resumable checkpoints, lmms-eval's raw logs) is not DVC's to keep.
    dvc_stages = yaml.safe_load((workspace / "dvc.yaml").read_text())["stages"]

    def digests(root: Path, study: str) -> dict[str, dict[str, str]]:
        outs = sorted({o for name in stages(workspace, study) for o in dvc_stages[name]["outs"]})
        return {o: tree_digest(root / o) if (root / o).is_dir() else tree_digest_file(root / o) for o in outs}

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(workspace), str(clone)], tmp_path)
    for study in ("ci-b", "ci"):
        make(clone, "pull", study)
        assert digests(clone, study) == digests(workspace, study)
        assert planned(clone, study) == [], f"{study}: Snakemake wants to rerun after the pull"
        assert "up to date" in make(clone, "status", study).stdout, f"{study}: dvc status is not clean"
    # A pulled study is tracked like a built one: an edit in the clone reruns what it changes.
    edit_params(clone, lambda raw: raw["protocols"]["ci"]["stage2"].update(lr=3.0e-4))
    assert ("train", f"runs/ci-b/stage2/{EXP_B}") in planned(clone, "ci-b")


@pytest.mark.slow
def test_a_study_with_explicit_s2_scales_trains_a_model_with_those_scales(workspace):
    from safetensors import safe_open

    exp = "llama3.1-8b_clip-l-336_s2_ci-lcs"
    snakemake(workspace, "ci-s2", f"runs/ci-s2/stage1/{exp}")
    model = workspace / f"runs/ci-s2/stage1/{exp}"
    assert json.loads((model / "llava_more.json").read_text())["s2_scales"] == S2_SCALES
    hidden = json.loads((model / "config.json").read_text())["vision_config"]["hidden_size"]
    widths = []
    for shard in model.glob("*.safetensors"):
        with safe_open(shard, "pt") as f:
            widths += [f.get_slice(k).get_shape()[1] for k in f.keys() if "projector.linear_1.weight" in k]
    # The projector reads one feature map per scale, stacked on channels: 2 x the encoder's width.
    assert widths == [len(S2_SCALES) * hidden]


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
