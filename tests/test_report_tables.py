"""From lmms-eval results JSON (its real layout) to scores.json, then to the report's tables and plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from llava_more.cli import main
from llava_more.errors import UserError
from llava_more.eval.benchmarks import COLUMNS, get_benchmark
from llava_more.eval.run import scores_from_results
from llava_more.report.plots import plot_benchmarks
from llava_more.report.tables import ExperimentScores, build_tables, load_scores

REAL_SUITE = ["gqa", "scienceqa_img", "textvqa_val", "ai2d", "pope", "mme",
              "mmbench_cn_dev", "mmbench_en_dev", "seedbench", "mmmu_val"]  # fmt: skip
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"

# lmms-eval's raw numbers for one model (fractions, except MME and MMBench's percent).
RAW = {
    "gqa": {"exact_match,none": 0.621},
    "scienceqa_img": {"exact_match,none": 0.713},
    "textvqa_val_ocr": {"exact_match,none": 0.54},
    "ai2d": {"exact_match,flexible-extract": 0.611},
    "pope": {"pope_f1_score,none": 0.859, "pope_accuracy,none": 0.87},
    "mme": {"mme_perception_score,none": 1372.2, "mme_cognition_score,none": 281.1},
    "mmbench_cn_dev_rules": {"gpt_eval_score,none": 64.2, "rule_unmatched,none": 0.0},
    "mmbench_en_dev_rules": {"gpt_eval_score,none": 69.2, "rule_unmatched,none": 0.05},
    "seedbench": {"seed_all,none": 0.635, "seed_video,none": 0.423, "seed_image,none": 0.691},
    "mmmu_val": {"mmmu_acc,none": 0.388},
}
N_DOCS = 3


def _write_lmms_output(raw_dir: Path, raw: dict) -> Path:
    """What ``lmms_eval --output_path raw_dir --log_samples`` leaves: results JSON + one samples file per task."""
    model_dir = raw_dir / "runs__model"
    model_dir.mkdir(parents=True)
    results = {
        "results": {task: {"alias": task, **metrics, **{k.replace(",", "_stderr,"): "N/A" for k in metrics}}
                    for task, metrics in raw.items()},
        "n-samples": {task: {"original": N_DOCS, "effective": N_DOCS} for task in raw},
        "config": {"model": "llava_more"},
    }  # fmt: skip
    path = model_dir / "20260101_000000_results.json"
    path.write_text(json.dumps(results))
    for task in raw:
        lines = [json.dumps({"doc_id": i, "target": "x", "filtered_resps": "x"}) for i in range(N_DOCS)]
        (model_dir / f"20260101_000000_samples_{task}.jsonl").write_text("\n".join(lines) + "\n")
    return path


def test_results_json_fills_every_column_in_the_papers_units(tmp_path):
    results = _write_lmms_output(tmp_path / "raw", RAW)
    scores = scores_from_results([get_benchmark(b) for b in REAL_SUITE], results, tmp_path / "raw", None)
    assert list(scores["columns"]) != [] and set(scores["columns"]) == set(COLUMNS)
    expected = {"GQA": 62.1, "ScienceQA": 71.3, "TextVQA": 54.0, "AI2D": 61.1, "POPE": 85.9, "MME-P": 1372.2,
                "MME-C": 281.1, "MMB-CN": 64.2, "MMB-EN": 69.2, "SEED-All": 63.5, "SEED-V": 42.3, "SEED-I": 69.1,
                "MMMU": 38.8}  # fmt: skip
    assert scores["columns"] == pytest.approx(expected)
    assert scores["flags"] == {"MMB-CN": {"rule_unmatched": 0.0}, "MMB-EN": {"rule_unmatched": 0.05}}


def test_a_metric_that_did_not_score_is_a_failure(tmp_path):
    from llava_more.errors import EvaluationFailed

    raw = {**RAW, "mme": {"mme_perception_score,none": 1372.2, "mme_cognition_score,none": None}}
    results = _write_lmms_output(tmp_path / "raw", raw)
    with pytest.raises(EvaluationFailed, match="mme: metric 'mme_cognition_score,none' .* is None"):
        scores_from_results([get_benchmark(b) for b in REAL_SUITE], results, tmp_path / "raw", None)


REFERENCE = """source,table,group,row,ref,s2,resolution,tokens,benchmark,value
paper,table1_llm,LLaVA-MORE (Ours),Phi-4-3.8B,1,,,,GQA,62.1
paper,table1_llm,LLaVA-MORE (Ours),Phi-4-3.8B,1,,,,POPE,85.9
paper,table1_llm,LLaVA-MORE (Ours),Phi-4-3.8B,1,,,,MMB-EN,
paper,table1_llm,LLaVA-MORE (Ours),Gemma-2-2B,61,,,,GQA,62.4
paper,table2_vision,LLaVA-MORE-3.8B (Ours),DINOv2 ViT-L/14,48,,224,256,GQA,60.9
paper,table2_vision,LLaVA-MORE-3.8B (Ours),DINOv2 ViT-L/14,19,,224,256,GQA,60.4
readme,readme,,LLaVA-v1.5-Phi_4-4B,,,,,GQA,99.9
"""


def _row(exp_id: str, llm: str, vision: str, columns: dict, stage: int = 2, flags=None) -> ExperimentScores:
    return ExperimentScores(
        exp_id, columns, flags or {}, stage, llm=llm, vision=vision, s2=False, pretrain="lcs"
    )


def test_tables_mark_the_best_and_add_paper_values_and_deltas(tmp_path):
    (tmp_path / "ref.csv").write_text(REFERENCE)
    rows = [
        _row("phi4-mini_clip-l-336_lcs", "phi4-mini", "clip-l-336", {"GQA": 63.0, "POPE": 84.9, "MMB-EN": 50.0},
             flags={"MMB-EN": {"rule_unmatched": 0.1}}),
        _row("gemma2-2b_clip-l-336_lcs", "gemma2-2b", "clip-l-336", {"GQA": 61.0, "POPE": 86.0, "MMB-EN": 55.0}),
        _row("gemma2-2b_clip-l-336_lcs", "gemma2-2b", "clip-l-336", {"GQA": 70.0, "POPE": 10.0}, stage=1),
        _row("phi4-mini_dinov2-l-reg-224_lcs", "phi4-mini", "dinov2-l-reg-224", {"GQA": 59.4}),
    ]  # fmt: skip
    tables = {
        "table1_llm": [r.experiment_id for r in rows[:2]],
        "table2_vision": ["phi4-mini_dinov2-l-reg-224_lcs"],
    }
    written = build_tables(rows, tables, tmp_path / "tables", tmp_path / "ref.csv")

    md = written["table1_llm"]["md"].read_text()
    assert "| Model | GQA | POPE | MMB-EN |" in md
    assert "| phi4-mini_clip-l-336_lcs | **63.0** | 84.9 | 50.0† |" in md
    assert "| ↳ paper: Phi-4-3.8B | 62.1 | 85.9 |  |" in md  # '-' in the paper stays empty
    assert "| ↳ Δ (ours − paper) | +0.9 | -1.0 |  |" in md
    # The stage-1 row is shown but never "best", even with the highest GQA.
    assert "| gemma2-2b_clip-l-336_lcs (stage 1 only) | 70.0 | 10.0 |  |" in md
    assert "| gemma2-2b_clip-l-336_lcs | 61.0 | **86.0** | **55.0** |" in md
    assert "10.0% of answers matched no option" in md

    with open(written["table1_llm"]["csv"], newline="") as f:
        records = list(csv.DictReader(f))
    phi = records[0]
    assert (
        phi["GQA"] == "63.0" and phi["GQA_paper"] == "62.1" and float(phi["GQA_delta"]) == pytest.approx(0.9)
    )
    assert phi["GQA_best"] == "True" and phi["POPE_best"] == "False" and phi["MMB-EN_flag"] == "0.1"
    assert [r["stage"] for r in records] == ["2", "2", "1"]

    # Table 2: DINOv2 with registers is the paper's row cited [19], not [48].
    md2 = written["table2_vision"]["md"].read_text()
    assert "| ↳ paper: DINOv2 ViT-L/14 (LLaVA-MORE-3.8B (Ours)) | 60.4 |" in md2
    tex = written["table1_llm"]["tex"].read_text()
    assert r"\textbf{63.0}" in tex and r"phi4-mini\_clip-l-336\_lcs" in tex and r"$^\dagger$" in tex


def test_demo_experiments_never_match_the_paper(tmp_path):
    (tmp_path / "ref.csv").write_text(REFERENCE)
    rows = [ExperimentScores("phi4-mini_clip-l-336_demo-lcs", {"GQA": 20.0}, llm="phi4-mini", vision="clip-l-336",
                             pretrain="demo-lcs")]  # fmt: skip
    md = build_tables(rows, {"table1_llm": [rows[0].experiment_id]}, tmp_path, tmp_path / "ref.csv")[
        "table1_llm"
    ]["md"]
    assert "paper" not in md.read_text()


def test_a_table_with_unevaluated_experiments_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no scores for experiment x_y_z"):
        build_tables([], {"table1_llm": ["x_y_z"]}, tmp_path)
    with pytest.raises(UserError, match="run its evaluation first"):
        load_scores(tmp_path / "missing.json", "x_y_z")


def _scores_file(path: Path, columns: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"columns": columns, "flags": {}}))


def test_report_command_writes_tables_and_plots_for_the_demo_study(tmp_path, capsys):
    from llava_more.config import load_params

    study = load_params(PARAMS).study("demo")
    for stage in (1, 2):
        for i, exp in enumerate(study.experiments):
            _scores_file(tmp_path / "eval" / f"stage{stage}" / exp.id / "scores.json",
                         {"GQA": 10.0 * i + stage, "POPE": 50.0 + i})  # fmt: skip
    code = main(["report", "--params", str(PARAMS), "--study", "demo", "--scores-dir", str(tmp_path / "eval"),
                 "--out", str(tmp_path / "tables"), "--plots", str(tmp_path / "plots")])  # fmt: skip
    assert code == 0
    for name in study.tables:
        md = (tmp_path / "tables" / f"{name}.md").read_text()
        assert all(exp_id in md for exp_id in study.tables[name])
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == ["gqa.png", "pope.png"]
    assert (tmp_path / "plots" / "gqa.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    (tmp_path / "eval" / "stage2" / study.experiments[0].id / "scores.json").unlink()
    assert main(["report", "--params", str(PARAMS), "--study", "demo", "--scores-dir", str(tmp_path / "eval"),
                 "--out", str(tmp_path / "tables")]) == 2  # fmt: skip
    assert "run its evaluation first" in capsys.readouterr().err


def test_plots_mark_paper_values(tmp_path):
    (tmp_path / "ref.csv").write_text(REFERENCE)
    rows = [_row("phi4-mini_clip-l-336_lcs", "phi4-mini", "clip-l-336", {"GQA": 63.0})]
    assert [p.name for p in plot_benchmarks(rows, tmp_path / "plots", tmp_path / "ref.csv")] == ["gqa.png"]
