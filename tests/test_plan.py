"""``llava-more plan``: the study's jobs from the real Snakemake DAG, their GPU-hour estimates, and
which are already built (outputs in the checkout, versions on the DVC remote)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
from pathlib import Path

import pytest

from llava_more import paths
from llava_more.cli import main
from llava_more.config import load_params
from llava_more.errors import UserError
from llava_more.pipeline.cost import GPUS, Assumptions, ModelSize, model_size, training_flops
from llava_more.pipeline.dvc import Job
from llava_more.pipeline.plan import plan_study
from llava_more.pipeline.plan_table import render_table
from llava_more.pipeline.pricing import LCS_558K_SAMPLES, LLAVA_665K_SAMPLES
from tests.workspace import BIN, ROOT, make_workspace, run

CI_EXP = "llama3.1-8b_clip-l-336_ci-lcs"


@pytest.fixture(scope="module")
def params():
    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="module")
def paper(params):
    return plan_study(params, "paper", ROOT, check_remote=False)


def test_formula_on_a_hand_computed_case():
    model = ModelSize(
        llm_params=1000, vision_params=100, projector_params=10, image_tokens=4, encoder_passes=14
    )
    # Two sequences of 10 tokens (4 of them image tokens), every sequence with an image.
    llm_stage1 = 4 * 1000 * 10  # frozen LLM: forward + backward through activations
    llm_stage2 = 6 * 1000 * 10  # trained LLM
    projector = 6 * 10 * 4  # trained in both stages, on image tokens only
    vision = 2 * 100 * 4 * 14  # frozen encoder forward, 14 S2 tile passes
    assert training_flops(model, 1, sequences=2, seq_len=10) == 2 * (llm_stage1 + projector + vision)
    assert training_flops(model, 2, sequences=2, seq_len=10) == 2 * (llm_stage2 + projector + vision)
    # Half the sequences text-only: the encoder and projector terms halve, the LLM term does not.
    assert training_flops(model, 2, 2, 10, image_fraction=0.5) == 2 * (llm_stage2 + (projector + vision) / 2)


def test_s2_costs_fourteen_encoder_passes_and_untied_embeddings_are_not_matmuls():
    s2, record = model_size("phi4-mini", "clip-l-336", True, "tiny")
    plain, _ = model_size("phi4-mini", "clip-l-336", None, "tiny")
    assert (s2.encoder_passes, plain.encoder_passes) == (14, 1)
    assert s2.image_tokens == plain.image_tokens == record["image_tokens"]
    # Phi-4-mini ties its embeddings (the table is the output head: counted); LLaMA does not.
    assert s2.llm_params == record["llm_params"]
    llama, llama_record = model_size("llama3.1-8b", "clip-l-336", None, "tiny")
    assert llama.llm_params < llama_record["llm_params"]


def test_paper_plan_lists_every_training_and_evaluation_of_the_dag(paper, params):
    study = params.study("paper")
    ids = {e.id for e in study.experiments}
    assert len(ids) == 29
    by_kind = {kind: [j for j in paper.jobs if j.kind == kind] for kind in paper.KINDS}
    assert len(by_kind["stage1"]) == len(by_kind["stage2"]) == 29
    assert {j.experiment for j in by_kind["stage1"]} == {j.experiment for j in by_kind["stage2"]} == ids
    assert len(by_kind["eval"]) == 29 and {j.stage for j in by_kind["eval"]} == {2}
    assert {j.rule for j in by_kind["other"]} >= {"init_model", "fetch_pretrain_data", "report"}
    for job in by_kind["stage1"] + by_kind["stage2"]:
        assert job.outputs == [paths.stage_dir("paper", job.stage, job.experiment)]
        assert job.samples == (LCS_558K_SAMPLES if job.stage == 1 else LLAVA_665K_SAMPLES)
        assert job.flops > 0 and job.gpu_hours > 0
    totals = paper.totals()
    assert totals["stage2"]["gpu_hours"] > totals["stage1"]["gpu_hours"] > totals["eval"]["gpu_hours"] > 0
    assert math.isclose(totals["total"]["gpu_hours"], sum(j.gpu_hours or 0 for j in paper.jobs), rel_tol=1e-9)


def test_llava_1_5_7b_estimate_is_near_the_published_a100_hours(paper):
    """LLaVA-1.5-7B took ~3.5 h + 10 h on 8 A100s (~108 A100-hours): the estimate is the same order."""
    hours = {
        j.kind: j.gpu_hours
        for j in paper.jobs
        if j.experiment == "vicuna-7b-v1.5_clip-l-336_lcs" and j.kind in ("stage1", "stage2")
    }
    assert 0.5 * 28 < hours["stage1"] < 1.5 * 28
    assert 0.5 * 80 < hours["stage2"] < 1.5 * 80


def test_bigger_models_and_s2_cost_more(paper):
    hours = {(j.kind, j.experiment): j.gpu_hours for j in paper.jobs}
    assert hours["stage2", "gemma2-9b_clip-l-336_lcs"] > hours["stage2", "phi4-mini_clip-l-336_lcs"]
    assert hours["stage1", "phi4-mini_clip-l-336_s2_lcs"] > hours["stage1", "phi4-mini_clip-l-336_lcs"]
    assert hours["stage1", "phi4-mini_siglip2-so400m-384_lcs"] > hours["stage1", "phi4-mini_dinov2-l-224_lcs"]


def test_gpu_mfu_and_measured_throughput_reprice_the_same_dag(paper, params):
    dag = [_as_job(j) for j in paper.jobs]
    h100 = plan_study(params, "paper", ROOT, Assumptions(gpu="h100", mfu=0.7), check_remote=False, jobs=dag)
    ratio = GPUS["h100"].peak_bf16_flops * 0.7 / (GPUS["a100"].peak_bf16_flops * 0.35)
    measured = plan_study(params, "paper", ROOT, Assumptions(throughput=2500), check_remote=False, jobs=dag)
    for base, fast, tput in zip(paper.jobs, h100.jobs, measured.jobs, strict=True):
        assert base.outputs == fast.outputs == tput.outputs
        if base.kind in ("stage1", "stage2"):
            assert math.isclose(base.gpu_hours / fast.gpu_hours, ratio)
            assert math.isclose(tput.gpu_hours, base.tokens / 2500 / 3600)


def test_table_shows_each_job_and_the_totals_per_stage(paper):
    table = render_table(paper)
    assert "A100 (312 TFLOP/s bf16) at MFU 0.35" in table
    ids = {job.experiment for job in paper.jobs if job.experiment}
    rows = [
        line.split()[:2] for line in table.splitlines() if len(line.split()) > 1 and line.split()[1] in ids
    ]
    assert len(rows) == 58 + 29
    assert [kind for kind, _ in rows] == ["stage1"] * 29 + ["stage2"] * 29 + ["eval"] * 29
    totals = paper.totals()
    for kind in ("stage1", "stage2", "eval"):
        line = next(
            line for line in table.splitlines() if line.startswith(f"{kind:<7}") and line.split()[1] == "29"
        )
        assert f"{totals[kind]['gpu_hours']:.1f}" in line
    assert "Estimates" in table


@pytest.mark.parametrize("flag", [["--mfu", "0"], ["--mfu", "1.5"], ["--throughput", "-3"]])
def test_impossible_assumptions_are_user_errors(flag, params, capsys):
    assert main(["plan", "--study", "ci", "--params", str(ROOT / "params.yaml"), *flag]) == 2
    assert flag[0] in capsys.readouterr().err
    with pytest.raises(UserError):
        Assumptions(mfu=-1).check()


# --------------------------------------------------------------------------- what is already built


@pytest.fixture(scope="module")
def built_ci(tmp_path_factory):
    """A ci workspace whose stage-1 model and its evaluation exist, the model pushed to a DVC remote."""
    ws = make_workspace(tmp_path_factory.mktemp("plan") / "ws")
    stage1 = paths.stage_dir("ci", 1, CI_EXP)
    scores = Path(paths.scores("ci", 1, CI_EXP))
    (ws / scores.parent).mkdir(parents=True)
    (ws / scores).write_text("{}")
    # A dvc.lock recording the stage-1 bundle, and that version pushed to the remote.
    remote = ws.parent / "remote"
    dvc = str(BIN / "dvc")
    run([dvc, "remote", "add", "-f", "-d", "local", str(remote)], ws)
    (ws / "dvc.yaml").write_text(
        f"stages:\n  stage1:\n    cmd: mkdir -p {stage1} && echo weights > {stage1}/model.bin\n    outs:\n"
        f"    - {stage1}\n"
    )
    run([dvc, "repro", "-q"], ws)
    run([dvc, "push", "-q"], ws)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["plan", "--study", "ci", "--params", str(ws / "params.yaml"), "--json"])
    assert code == 0
    return ws, out.getvalue()


def test_json_output_parses(built_ci):
    plan = json.loads(built_ci[1])
    assert plan["study"] == "ci" and plan["assumptions"]["mfu"] == 0.35
    assert {j["kind"] for j in plan["jobs"]} == {"stage1", "stage2", "eval", "other"}
    assert plan["totals"]["total"]["jobs"] == len(plan["jobs"])


def test_existing_outputs_are_cached_locally_and_on_the_remote(built_ci):
    plan = json.loads(built_ci[1])
    jobs = {(j["kind"], j["stage"]): j for j in plan["jobs"] if j["experiment"] == CI_EXP}
    assert (jobs["stage1", 1]["local"], jobs["stage1", 1]["remote"]) == (True, True)
    assert (jobs["eval", 1]["local"], jobs["eval", 1]["remote"]) == (True, False)  # not in dvc.lock
    assert (jobs["stage2", 2]["local"], jobs["stage2", 2]["remote"]) == (False, False)
    assert (jobs["eval", 2]["local"], jobs["eval", 2]["remote"]) == (False, False)
    totals = plan["totals"]
    assert (totals["stage1"]["local"], totals["stage1"]["remote"], totals["stage1"]["gpu_hours_to_run"]) == (
        1,
        1,
        0,
    )
    assert totals["stage2"]["gpu_hours_to_run"] == totals["stage2"]["gpu_hours"] > 0


def test_deleting_the_local_copy_leaves_it_cached_on_the_remote(built_ci):
    ws, text = built_ci
    shutil.rmtree(ws / paths.stage_dir("ci", 1, CI_EXP))
    dag = [_as_job(job) for job in json.loads(text)["jobs"]]
    plan = plan_study(load_params(ws / "params.yaml"), "ci", ws, jobs=dag)
    stage1 = next(j for j in plan.jobs if j.kind == "stage1")
    assert (stage1.local, stage1.remote) == (False, True)


def _as_job(planned):
    """A planned job back as the DAG's job (only its rule and outputs matter to the plan)."""
    fields = planned if isinstance(planned, dict) else vars(planned)
    return Job(rule=fields["rule"], cmd="", log="", inputs=[], outputs=list(fields["outputs"]))
