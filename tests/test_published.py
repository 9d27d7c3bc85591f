"""Published studies: released checkpoints imported and evaluated instead of trained.

The shipped ``published`` study (every released LLaVA-MORE checkpoint and the Hub baselines) parses,
dry-runs and is priced as evaluations only; its params are validated like a training study's; the
calibration view compares each checkpoint's scores with the paper's; and a tiny twin of the study
(tiny original-format releases on disk) runs end to end through Snakemake: import, evaluation on demo
tasks, tables with the paper's numbers and the calibration view.
"""

from __future__ import annotations

import copy
import csv
import json

import pytest
import yaml

from llava_more.config import load_params, parse_params
from llava_more.config.published import checkpoint_of, published_bundles
from llava_more.errors import ConfigError
from llava_more.pipeline.plan import plan_study
from llava_more.report.calibration import build_calibration, tolerance
from llava_more.report.layout import RowKey, paper_row
from llava_more.report.reference import PaperResults
from llava_more.report.scores import ExperimentScores
from tests.original_checkpoints import save_tower, write_original_checkpoint
from tests.workspace import BIN, ROOT, make_workspace, run

RAW = yaml.safe_load((ROOT / "params.yaml").read_text())
REFERENCE = ROOT / "reference" / "paper_results.csv"
# The checkpoints the LLaVA-MORE README publishes (its "Checkpoints" table).
RELEASED = {
    "aimagelab/LLaVA_MORE-llama_3_1-8B-pretrain",
    "aimagelab/LLaVA_MORE-llama_3_1-8B-finetuning",
    "aimagelab/LLaVA_MORE-llama_3_1-8B-S2-pretrain",
    "aimagelab/LLaVA_MORE-llama_3_1-8B-S2-finetuning",
    "aimagelab/LLaVA_MORE-llama_3_1-8B-siglip-pretrain",
    "aimagelab/LLaVA_MORE-llama_3_1-8B-siglip-finetuning",
    "aimagelab/LLaVA_MORE-llama_3_1-8B-S2-siglip-pretrain",
    "aimagelab/LLaVA_MORE-llama_3_1-8B-S2-siglip-finetuning",
    "aimagelab/LLaVA_MORE-phi_4-finetuning",
    "aimagelab/LLaVA_MORE-gemma_2_9b-finetuning",
    "aimagelab/LLaVA_MORE-gemma_2_9b-siglip2-finetuning",
    "aimagelab/LLaVA_MORE-llama_3_1-reasoning-finetuning",
}


@pytest.fixture(scope="module")
def study():
    return load_params(ROOT / "params.yaml").study("published")


def test_the_published_study_holds_every_release_and_the_hub_baselines(study):
    assert study.published and study.size == "real"
    named = {c for e in study.experiments for c in (e.checkpoint, e.stage1_checkpoint) if c}
    assert RELEASED <= named
    assert {"llava-hf/llava-1.5-7b-hf", "MBZUAI/LLaVA-Meta-Llama-3-8B-Instruct-FT"} <= named
    # Stage-1 bundles are the pretrain releases, stage 2 the fine-tuned ones.
    for stage, exp_id in published_bundles(study):
        source = checkpoint_of(study, stage, exp_id)
        assert source.endswith("-pretrain") == (stage == 1)
    # Every released fine-tuned model has published numbers (paper tables or the README table).
    reference = PaperResults(REFERENCE)
    for exp in study.experiments:
        keys = [paper_row(t, RowKey(exp.llm, exp.vision, exp.s2, exp.pretrain)) for t in study.tables]
        assert any(k and reference.values(k) for k in keys), exp.id
    # The paper study's twin of each published model has the same experiment id, so the same rows.
    paper_ids = {e.id for e in load_params(ROOT / "params.yaml").study("paper").experiments}
    assert {e.id for e in study.experiments} <= paper_ids


def _published(raw_study: dict) -> dict:
    raw = copy.deepcopy(RAW)
    raw["studies"]["p"] = raw_study
    return raw


BASE = {
    "kind": "published",
    "size": "real",
    "pretrain": "lcs",
    "benchmarks": "real",
    "experiments": [{"llm": "phi4-mini", "vision": "clip-l-336", "checkpoint": "owner/model"}],
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"protocol": "llava15"}, "studies.p.protocol: unknown key"),
        ({"kind": "publshed"}, "studies.p.kind: 'publshed' is not one of training, published"),
        (
            {"experiments": [{"llm": "phi4-mini", "vision": "clip-l-336"}]},
            r"experiments\[0\].checkpoint: required",
        ),
        (
            {
                "experiments": [
                    {"llm": ["phi4-mini", "gemma2-9b"], "vision": "clip-l-336", "checkpoint": "o/m"}
                ]
            },
            r"experiments\[0\].llm: one checkpoint is one model",
        ),
        (
            {"experiments": [{"llm": "phi4-mini", "vision": "clip-l-336", "checkpoint": "/no/such/folder"}]},
            r"experiments\[0\].checkpoint: '/no/such/folder' is neither a checkpoint folder",
        ),
        (
            {
                "experiments": [
                    {"llm": "phi4-mini", "vision": "clip-l-336", "checkpoint": "o/m", "pretrain": "lcz"}
                ]
            },
            r"experiments\[0\].pretrain: 'lcz' is not one of",
        ),
        (
            {"experiments": [{"llm": "phi-5", "vision": "clip-l-336", "checkpoint": "o/m"}]},
            r"experiments\[0\].llm: unknown LLM id 'phi-5'",
        ),
        (
            {"experiments": [BASE["experiments"][0], {**BASE["experiments"][0], "checkpoint": "o/other"}]},
            r"experiments\[1\]: a second checkpoint for phi4-mini_clip-l-336_lcs",
        ),
        ({"tables": {"table1_llm": {"llm": "gemma2-2b"}}}, "matches no experiment"),
    ],
)
def test_bad_published_studies_name_the_key(change, message):
    with pytest.raises(ConfigError, match=message):
        parse_params(_published({**BASE, **change}), base_dir=ROOT)


def test_a_local_checkpoint_folder_is_accepted(tmp_path):
    (tmp_path / "release").mkdir()
    raw = _published({**BASE, "experiments": [{**BASE["experiments"][0], "checkpoint": "release"}]})
    study = parse_params(raw, base_dir=tmp_path).study("p")
    assert study.experiments[0].checkpoint == "release" and study.eval_untrained == ()


def test_the_published_study_dry_runs_to_imports_and_evaluations(study):
    out = run(
        [str(BIN / "snakemake"), "--cores", "1", "--dry-run", "--config", "study=published"], ROOT
    ).stdout
    stats = out.split("Job stats:", 1)[1].split("\n\n", 1)[0].splitlines()[3:]  # after the header lines
    counts = {name: int(count) for name, count in (line.split() for line in stats)}
    bundles = len(published_bundles(study))
    assert counts == {
        "import_published": bundles,
        "evaluate": bundles,
        "report": 1,
        "all": 1,
        "total": 2 * bundles + 2,
    }
    assert bundles == len(study.experiments) + 4  # four pretrain releases


def test_plan_prices_only_the_evaluations(study):
    params = load_params(ROOT / "params.yaml")
    plan = plan_study(params, "published", ROOT, check_remote=False)
    totals = plan.totals()
    assert totals["stage1"]["jobs"] == totals["stage2"]["jobs"] == 0
    assert totals["eval"]["jobs"] == len(published_bundles(study))
    evals = [j for j in plan.jobs if j.kind == "eval"]
    assert all(j.gpu_hours and j.gpu_hours > 0 for j in evals)
    assert {j.rule for j in plan.jobs if j.kind == "other"} == {"import_published", "report"}
    # A bigger LLM costs more to evaluate on the same benchmarks.
    hours = {j.experiment: j.gpu_hours for j in evals if j.stage == 2}
    assert (
        hours["gemma2-9b_clip-l-336_lcs"]
        > hours["llama3.1-8b_clip-l-336_lcs"]
        > hours["phi4-mini_clip-l-336_lcs"]
    )
    assert totals["total"]["gpu_hours"] == pytest.approx(totals["eval"]["gpu_hours"])


# ---------------------------------------------------------------------------------------------- calibration
def _scores(
    exp_id: str, llm: str, vision: str, columns: dict, *, s2: bool = False, stage: int = 2
) -> ExperimentScores:
    return ExperimentScores(exp_id, columns, {}, stage, llm=llm, vision=vision, s2=s2, pretrain="lcs")


def test_calibration_shows_which_columns_reproduce(tmp_path):
    # Paper: Phi-4 GQA 62.1, MME-P 1372.2; LLaMA-3.1 (table 1) GQA 63.6, MME-P 1531.5;
    # LLaMA-3.1-S2 only in the README table: GQA 64.5, MME-P 1563.8.
    rows = [
        _scores(
            "phi4-mini_clip-l-336_lcs",
            "phi4-mini",
            "clip-l-336",
            {"GQA": 62.6, "MME-P": 1385.0, "POPE": 80.0},
        ),
        _scores("llama3.1-8b_clip-l-336_lcs", "llama3.1-8b", "clip-l-336", {"GQA": 63.0, "MME-P": 1500.0}),
        _scores(
            "llama3.1-8b_clip-l-336_s2_lcs",
            "llama3.1-8b",
            "clip-l-336",
            {"GQA": 64.9, "MME-P": 1563.8},
            s2=True,
        ),
        _scores("llama3.1-8b_clip-l-336_lcs", "llama3.1-8b", "clip-l-336", {"GQA": 10.0}, stage=1),
    ]
    written = build_calibration(rows, REFERENCE, tmp_path)
    md = written["md"].read_text()
    assert "| Model | paper row | GQA | POPE | MME-P |" in md
    assert "| phi4-mini_clip-l-336_lcs | Phi-4-3.8B [table1_llm] | +0.5 | -5.9 | +12.8 |" in md
    assert "| llama3.1-8b_clip-l-336_lcs | LLaMA-3.1-8B [table1_llm] | -0.6 |  | -31.5 |" in md
    with open(written["csv"], newline="") as f:
        cells = {(r["experiment"], r["column"]): r for r in csv.DictReader(f)}
    phi_gqa = cells[("phi4-mini_clip-l-336_lcs", "GQA")]
    assert float(phi_gqa["delta"]) == pytest.approx(0.5) and phi_gqa["within"] == "True"
    assert phi_gqa["paper_row"] == "Phi-4-3.8B" and phi_gqa["paper_table"] == "table1_llm"
    # MME-P is judged on 1% of the paper's value: +12.8 on 1372.2 is within, -31.5 on 1531.5 is not.
    assert cells[("phi4-mini_clip-l-336_lcs", "MME-P")]["within"] == "True"
    assert cells[("llama3.1-8b_clip-l-336_lcs", "MME-P")]["within"] == "False"
    assert tolerance("MME-P", 1372.2) == pytest.approx(13.722) and tolerance("GQA", 62.1) == 1.0
    # The S2 model's numbers come from the README table.
    s2 = cells[("llama3.1-8b_clip-l-336_s2_lcs", "GQA")]
    assert s2["paper_table"] == "readme" and s2["paper_row"] == "LLaVA-v1.5-LLaMA3_1-8B-S2"
    assert float(s2["delta"]) == pytest.approx(0.4)
    # The stage-1 model has no published numbers: listed, not compared.
    assert not any(k[0] == "llama3.1-8b_clip-l-336_lcs" and r["ours"] == "10.0" for k, r in cells.items())
    assert "Without published numbers (not compared): llama3.1-8b_clip-l-336_lcs (stage 1 only)." in md

    with open(written["summary"], newline="") as f:
        summary = {r["column"]: r for r in csv.DictReader(f)}
    assert summary["GQA"]["reproduced"] == "True" and summary["GQA"]["within"] == "3"
    assert float(summary["GQA"]["max_abs_delta"]) == pytest.approx(0.6)
    assert summary["MME-P"]["reproduced"] == "False" and summary["MME-P"]["within"] == "2"
    assert summary["POPE"]["models"] == "1" and summary["POPE"]["reproduced"] == "False"  # 80.0 vs 85.9
    assert "| reproduced | | yes (3/3) | no (0/1) | no (2/3) |" in md
    tex = written["tex"].read_text()
    assert r"mean $\Delta$" in tex and r"phi4-mini\_clip-l-336\_lcs" in tex


# ---------------------------------------------------------------------------------------------- the tiny twin
TWIN = "published-twin"


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """A workspace whose params.yaml adds a tiny published study over tiny original-format releases."""
    ws = make_workspace(tmp_path_factory.mktemp("published"))
    towers = ws / "checkpoints" / "towers"
    clip = save_tower("clip-l-336", towers)
    siglip = save_tower("siglip2-so400m-384", towers)
    write_original_checkpoint(ws / "checkpoints/llama-clip-finetuning", llm_id="llama3.1-8b", tower_dir=clip)
    write_original_checkpoint(
        ws / "checkpoints/gemma-siglip2-finetuning",
        llm_id="gemma2-9b",
        tower_dir=siglip,
        carry_tower=True,
        seed=1,
    )
    # A pretrain release: config + mm_projector.bin, on the fine-tuned release's LLM as its base.
    import torch

    from tests.original_checkpoints import read_state

    base = ws / "checkpoints/llama-clip-finetuning"
    pretrain = ws / "checkpoints/llama-clip-pretrain"
    pretrain.mkdir()
    config = json.loads((base / "config.json").read_text())
    (pretrain / "config.json").write_text(json.dumps(config | {"_name_or_path": str(base)}))
    state = read_state(base)
    torch.save(
        {k: v for k, v in state.items() if k.startswith("model.mm_projector.")}, pretrain / "mm_projector.bin"
    )

    raw = yaml.safe_load((ws / "params.yaml").read_text())
    raw["demo_benchmarks"]["size"] = 16  # of which 4 per task are evaluated
    raw["studies"][TWIN] = {
        "kind": "published",
        "size": "tiny",
        "pretrain": "lcs",
        "benchmarks": "demo-small",
        "eval_samples": 4,
        "experiments": [
            {"llm": "llama3.1-8b", "vision": "clip-l-336", "checkpoint": "checkpoints/llama-clip-finetuning",
             "stage1_checkpoint": "checkpoints/llama-clip-pretrain"},
            {"llm": "gemma2-9b", "vision": "siglip2-so400m-384", "checkpoint": "checkpoints/gemma-siglip2-finetuning"},
        ],
        "tables": {"table1_llm": {"vision": "clip-l-336"}, "readme": {"pretrain": "lcs"}},
    }  # fmt: skip
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    run(
        [
            str(BIN / "snakemake"),
            "--profile",
            "profiles/local",
            "--cores",
            "2",
            "all",
            "--config",
            f"study={TWIN}",
        ],
        ws,
        timeout=1800,
    )
    return ws


def test_the_twin_study_runs_to_tables_with_the_calibration_view(twin):
    tables = twin / f"results/{TWIN}/tables"
    for exp_id, stage in (
        ("llama3.1-8b_clip-l-336_lcs", 2),
        ("gemma2-9b_siglip2-so400m-384_lcs", 2),
        ("llama3.1-8b_clip-l-336_lcs", 1),
    ):
        meta = json.loads((twin / f"runs/{TWIN}/stage{stage}/{exp_id}/llava_more.json").read_text())
        assert meta["source"].startswith("checkpoints/") and meta["template"].endswith("+original")
        scores = json.loads((twin / f"results/{TWIN}/eval/stage{stage}/{exp_id}/scores.json").read_text())
        assert set(scores["columns"]) == {"GQA", "POPE"}
    # The paper's value and our delta in every cell of the released models' rows.
    table1 = (tables / "table1_llm.md").read_text()
    llama = next(line for line in table1.splitlines() if line.startswith("| LLaMA-3.1-8B |"))
    assert "paper 63.6, Δ " in llama and "paper 85.1, Δ " in llama
    assert "| LLaMA-3.1-8B (stage 1 only) |" in table1
    readme = (tables / "readme.md").read_text()
    gemma = next(line for line in readme.splitlines() if line.startswith("| LLaVA-v1.5-gemma_2-9B-siglip2 |"))
    assert "paper 65.6, Δ " in gemma and "paper 86.1, Δ " in gemma
    calibration = (tables / "calibration.md").read_text()
    assert "| llama3.1-8b_clip-l-336_lcs | LLaMA-3.1-8B [table1_llm] |" in calibration
    # The first paper table that has the model: table 2 for Gemma-2-9B with SigLIP2.
    assert (
        "| gemma2-9b_siglip2-so400m-384_lcs | SigLIP2 ViT-L/14 (LLaVA-MORE-9B (Ours)) [table2_vision] |"
        in calibration
    )
    with open(tables / "calibration.csv", newline="") as f:
        cells = {(r["experiment"], r["column"]): r for r in csv.DictReader(f)}
    gqa = cells[("llama3.1-8b_clip-l-336_lcs", "GQA")]
    ours = json.loads(
        (twin / f"results/{TWIN}/eval/stage2/llama3.1-8b_clip-l-336_lcs/scores.json").read_text()
    )
    assert float(gqa["delta"]) == pytest.approx(ours["columns"]["GQA"] - 63.6, abs=1e-3)
    # A second run has nothing to do.
    out = run(
        [str(BIN / "snakemake"), "--profile", "profiles/local", "-n", "all", "--config", f"study={TWIN}"],
        twin,
    ).stdout
    assert "Nothing to be done" in out
