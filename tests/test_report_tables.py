"""From lmms-eval results JSON (its real layout) to scores.json, then to the paper-faithful tables."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from llava_more.cli import main
from llava_more.config import load_params
from llava_more.errors import UserError
from llava_more.eval.benchmarks import AVERAGE, COLUMNS, get_benchmark
from llava_more.eval.run import scores_from_results
from llava_more.report.bootstrap import Bootstrap
from llava_more.report.formats import latex, markdown
from llava_more.report.layout import README_COLUMNS, RowKey, table_layout
from llava_more.report.reference import PaperResults
from llava_more.report.results import StudyResults
from llava_more.report.samples import ColumnSamples
from llava_more.report.scores import ExperimentScores, load_scores
from llava_more.report.tables import build_table

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"
REFERENCE_CSV = REPO / "reference" / "paper_results.csv"
REAL_SUITE = ["gqa", "scienceqa_img", "textvqa_val", "ai2d", "pope", "mme",
              "mmbench_cn_dev", "mmbench_en_dev", "seedbench", "mmmu_val"]  # fmt: skip

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


# --------------------------------------------------------------------------- helpers


def _accuracy(p: float, n: int = 200, seed: int = 0) -> ColumnSamples:
    """Exactly ``round(p * n)`` of ``n`` questions right, in a random order."""
    x = np.zeros(n)
    x[: round(p * n)] = 1
    np.random.default_rng(seed).shuffle(x)
    return ColumnSamples("mean", [str(i) for i in range(n)], {"x": x})


def _run(
    key: RowKey, values: dict[str, float], *, samples: bool = True, seed=None, flags=None
) -> ExperimentScores:
    """A model whose scores are ``values``; with per-question scores (accuracies) where ``samples``."""
    per_sample = {}
    columns = {}
    for i, (column, value) in enumerate(values.items()):
        if samples and column not in ("MME-P", "MME-C"):
            s = _accuracy(value / 100, seed=hash((key, column, seed, i)) % 2**32)
            per_sample[column] = s
            columns[column] = s.point()
        else:
            columns[column] = value
    exp_id = f"{key.llm}_{key.vision}" + ("_s2" if key.s2 else "") + f"_{key.pretrain}"
    return ExperimentScores(exp_id, columns, flags or {}, key.stage, key.llm, key.vision, key.s2, key.pretrain,
                            seed, per_sample)  # fmt: skip


def _key(
    llm: str, vision: str = "clip-l-336", s2: bool = False, pretrain: str = "lcs", stage: int = 2
) -> RowKey:
    return RowKey(llm, vision, s2, pretrain, stage)


def _md_line(md: str, label: str) -> list[str]:
    line = next(line for line in md.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


# --------------------------------------------------------------------------- layouts and cells


def test_table1_has_the_papers_blocks_best_per_block_paper_values_and_deltas():
    keys = [_key("phi-2"), _key("gemma2-2b"), _key("phi4-mini"), _key("llama3.1-8b"), _key("gemma2-9b")]
    runs = [
        _run(keys[0], {"GQA": 40.0, "POPE": 80.0, "MMB-EN": 50.0}),
        _run(keys[1], {"GQA": 60.0, "POPE": 86.0, "MMB-EN": 55.0}, flags={"MMB-EN": {"rule_unmatched": 0.1}}),
        _run(keys[2], {"GQA": 63.0, "POPE": 84.0, "MMB-EN": 70.0}),
        _run(keys[3], {"GQA": 64.0, "POPE": 85.0, "MMB-EN": 72.0}),
        _run(keys[4], {"GQA": 66.0, "POPE": 87.0, "MMB-EN": 71.0}),
    ]
    results = StudyResults(runs, Bootstrap(500))
    view = build_table(table_layout("table1_llm", keys, "real"), results, PaperResults(REFERENCE_CSV))
    assert [b.title for b in view.blocks] == ["Small-Scale MLLMs", "Medium-Scale MLLMs"]
    assert [[r.label for r in b.rows] for b in view.blocks] == [
        ["LLaVA-Phi-2.7B", "Gemma-2-2B", "Phi-4-3.8B"], ["LLaMA-3.1-8B", "Gemma-2-9B"]]  # fmt: skip
    assert [r.spec.section for r in view.blocks[0].rows] == [None, "LLaVA-MORE (Ours)", "LLaVA-MORE (Ours)"]
    assert view.columns == ("GQA", "POPE", "MMB-EN", AVERAGE)

    small, medium = view.blocks
    # Best per block, not over the table: Phi-4 is the small block's best GQA though Gemma-2-9B beats it.
    phi4 = small.rows[2]
    assert phi4.cells["GQA"].best and not small.rows[1].cells["GQA"].best
    assert medium.rows[1].cells["GQA"].best and not medium.rows[0].cells["GQA"].best
    assert small.rows[1].cells["POPE"].best and medium.rows[1].cells["POPE"].best
    # The paper's Phi-4-3.8B row and our delta; LLaVA-Phi's '-' stays empty.
    assert phi4.cells["GQA"].paper == 62.1 and phi4.cells["GQA"].delta == pytest.approx(
        phi4.cells["GQA"].ours.value - 62.1
    )
    assert small.rows[0].cells["GQA"].paper is None and small.rows[0].cells["POPE"].paper == 85.0
    # The average (a row with every column), its interval, and the paper's own average.
    avg = phi4.cells[AVERAGE]
    assert avg.ours.value == pytest.approx(
        np.mean([phi4.cells[c].ours.value for c in ("GQA", "POPE", "MMB-EN")])
    )
    assert avg.ours.low < avg.ours.value < avg.ours.high
    assert avg.paper == pytest.approx(np.mean([62.1, 85.9, 69.2]))
    # Differences against the block's first row, paired: Phi-4 minus LLaVA-Phi.
    assert phi4.baseline is small.rows[0] and phi4.differences["GQA"].paired
    assert phi4.differences["GQA"].value == pytest.approx(
        phi4.cells["GQA"].ours.value - small.rows[0].cells["GQA"].ours.value
    )

    md = markdown(view)
    assert "| Model | GQA | POPE | MMB-En | Avg |" in md
    assert "| ***Small-Scale MLLMs*** |" in md and "| *LLaVA-MORE (Ours)* |" in md
    cells = _md_line(md, "Phi-4-3.8B")
    assert cells[1].startswith(f"**{phi4.cells['GQA'].ours.value:.1f}** [") and "paper 62.1, Δ +" in cells[1]
    assert "†" in _md_line(md, "Gemma-2-2B")[3] and "10.0% of answers matched no option" in md
    assert "Differences within blocks" in md
    tex = latex(view)
    assert r"\multicolumn{4}{l}{\textit{Small-Scale MLLMs}}" not in tex  # width includes the Avg column
    assert (
        r"\multicolumn{5}{l}{\textit{Small-Scale MLLMs}}" in tex
        and r"\textbf{" in tex
        and r"\shortstack[r]" in tex
    )


def test_tables_2_to_4_have_one_block_per_llm_and_their_information_columns():
    keys = [_key(llm, vision, s2) for llm in ("gemma2-9b", "phi4-mini")
            for vision in ("siglip2-so400m-384", "clip-l-336") for s2 in (True, False)]  # fmt: skip
    results = StudyResults([_run(k, {"TextVQA": 50.0 + 5 * k.s2 + 3 * (k.vision != "clip-l-336")}) for k in keys],
                           Bootstrap(300))  # fmt: skip
    view = build_table(table_layout("table3_s2", keys, "real"), results, PaperResults(REFERENCE_CSV))
    assert [b.title for b in view.blocks] == ["LLaVA-MORE-3.8B (Ours)", "LLaVA-MORE-9B (Ours)"]
    rows = view.blocks[0].rows
    assert [r.label for r in rows] == [
        "CLIP ViT-L/14",
        "CLIP ViT-L/14 + S2",
        "SigLIP2 ViT-L/14",
        "SigLIP2 ViT-L/14 + S2",
    ]
    assert [r.spec.info for r in rows[:2]] == [{"S2": "✗", "Resolution": "336", "#Tokens": "576"},
                                              {"S2": "✓", "Resolution": "336", "#Tokens": "576"}]  # fmt: skip
    # In table 3 an S2 row is compared with the same encoder without S2.
    assert rows[1].baseline is rows[0] and rows[3].baseline is rows[2] and rows[2].baseline is None
    assert rows[1].cells["TextVQA"].paper == 54.9  # CLIP + S2 at 3.8B
    md = markdown(view)
    assert "| Model | S2 | Resolution | #Tokens | TextVQA | Avg |" in md

    tiny = build_table(table_layout("table2_vision", [_key("phi4-mini", "siglip2-so400m-384", pretrain="demo-lcs")],
                                    "tiny"), results)  # fmt: skip
    assert tiny.blocks[0].title == "Phi-4-3.8B (tiny twin)"
    assert tiny.blocks[0].rows[0].spec.info == {
        "Resolution": "48",
        "#Tokens": "36",
    }  # the tiny twin's own sizes
    assert not tiny.with_paper


def test_rows_that_differ_beyond_the_tables_axis_say_how():
    keys = [_key("phi4-mini", pretrain="lcs"), _key("phi4-mini", pretrain="laion")]
    layout = table_layout("table2_vision", keys, "real")
    assert [r.label for r in layout.rows()] == [
        "CLIP ViT-L/14 (LLaVA Pre-Train LCS (558k))",
        "CLIP ViT-L/14 (LAION (558k))",
    ]


def test_seeds_are_one_row_with_mean_and_spread():
    key = _key("phi4-mini", pretrain="demo-lcs")
    runs = [
        _run(key, {"GQA": 60.0}, seed=0),
        _run(key, {"GQA": 70.0}, seed=1),
        _run(key, {"GQA": 65.0}, seed=2),
    ]
    view = build_table(table_layout("table1_llm", [key], "tiny"), StudyResults(runs, Bootstrap(300)))
    (row,) = view.rows()
    cell = row.cells["GQA"].ours
    assert row.seeds == [0, 1, 2] and cell.seeds == 3
    assert cell.value == pytest.approx(np.mean([r.columns["GQA"] for r in runs]))
    assert cell.spread == pytest.approx(np.std([r.columns["GQA"] for r in runs], ddof=1))
    assert " σ" in markdown(view) and "σ is their standard deviation" in markdown(view)


def test_cells_without_per_question_scores_have_no_interval():
    key = _key("phi4-mini", pretrain="demo-lcs")
    view = build_table(table_layout("table1_llm", [key], "tiny"),
                       StudyResults([_run(key, {"GQA": 60.0}, samples=False)], Bootstrap(300)))  # fmt: skip
    assert (
        view.rows()[0].cells["GQA"].ours.value == 60.0 and not view.rows()[0].cells["GQA"].ours.has_interval
    )
    assert "[" not in _md_line(markdown(view), "Phi-4-3.8B")[1]


# --------------------------------------------------------------------------- the paper study, before any training


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_paper_study_tables_from_the_reference_alone_have_the_papers_structure(tmp_path):
    code = main(["report", "--params", str(PARAMS), "--study", "paper", "--reference-only",
                 "--reference", str(REFERENCE_CSV), "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    with open(REFERENCE_CSV, newline="", encoding="utf-8") as f:
        reference = list(csv.DictReader(f))
    study = load_params(PARAMS).study("paper")
    assert set(study.tables) == {"table1_llm", "table2_vision", "table3_s2", "table4_pretrain_data", "readme"}
    for table in study.tables:
        ref = [r for r in reference if r["table"] == table]
        # The CSV's rows in order: (group, row, S2, resolution, tokens), one per printed row.
        expected_rows = list(dict.fromkeys((r["group"], r["row"], r["ref"], r["s2"], r["resolution"], r["tokens"])
                                           for r in ref))  # fmt: skip
        expected_columns = list(dict.fromkeys(r["benchmark"] for r in ref))
        ours = _csv_rows(tmp_path / f"{table}.csv")
        assert len(ours) == len(expected_rows), table
        for row, (group, label, _ref, s2, resolution, tokens) in zip(ours, expected_rows, strict=True):
            assert (row["section"] or row["block"]) == group
            assert row["row"].removesuffix(" + registers").removesuffix(" + S2") == label
            if table == "table3_s2":
                assert row["S2"] == {"yes": "✓", "no": "✗"}[s2]
            if table in ("table2_vision", "table3_s2"):
                assert (row["Resolution"], row["#Tokens"]) == (resolution, tokens)
            values = {r["benchmark"]: r["value"] for r in ref if (r["group"], r["row"], r["ref"], r["s2"]) ==
                      (group, label, _ref, s2)}  # fmt: skip
            for column, value in values.items():
                assert row[f"{column}_paper"] == (str(float(value)) if value else ""), (table, label, column)
        # Columns: the paper's (the README's own order in its table), then the average.
        benchmark_columns = [h for h in ours[0] if h in COLUMNS]
        assert benchmark_columns == expected_columns
        assert tuple(expected_columns) == (README_COLUMNS if table == "readme" else COLUMNS)
        md = (tmp_path / f"{table}.md").read_text()
        blocks = [line.split("***")[1] for line in md.splitlines() if line.startswith("| ***")]
        assert blocks == list(dict.fromkeys(r["block"] for r in ours if r["block"]))
    t1 = _csv_rows(tmp_path / "table1_llm.csv")
    assert [r["block"] for r in t1] == ["Small-Scale MLLMs"] * 3 + ["Medium-Scale MLLMs"] * 5


def test_too_few_bootstrap_replicates_are_a_user_error(tmp_path, capsys):
    args = ["report", "--params", str(PARAMS), "--study", "paper", "--reference-only", "--reference",
            str(REFERENCE_CSV), "--out", str(tmp_path), "--bootstrap", "10"]  # fmt: skip
    assert main(args) == 2 and "needs at least 100 replicates" in capsys.readouterr().err


def test_reference_only_needs_the_reference(tmp_path, capsys):
    assert (
        main(
            [
                "report",
                "--params",
                str(PARAMS),
                "--study",
                "paper",
                "--reference-only",
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "need --reference" in capsys.readouterr().err


# --------------------------------------------------------------------------- the report command


def _scores_file(path: Path, columns: dict, samples: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"columns": columns, "flags": {}, "samples": samples or {}}))


def test_report_command_writes_the_demo_tables_with_intervals(tmp_path, capsys):
    study = load_params(PARAMS).study("demo")
    for stage in (1, 2):
        for i, exp in enumerate(study.experiments):
            gqa = _accuracy(0.2 + 0.1 * i if stage == 2 else 0.02, seed=i + 10 * stage)
            _scores_file(tmp_path / "eval" / f"stage{stage}" / exp.id / "scores.json",
                         {"GQA": gqa.point(), "POPE": 50.0 + i}, {"GQA": gqa.to_json()})  # fmt: skip
    code = main(["report", "--params", str(PARAMS), "--study", "demo", "--scores-dir", str(tmp_path / "eval"),
                 "--out", str(tmp_path / "tables"), "--findings", str(tmp_path / "findings.md"),
                 "--bootstrap", "300"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-2:] == [f"Tables of study demo: {tmp_path / 'tables'}/",
                                     f"Findings: {tmp_path / 'findings.md'}"]  # fmt: skip
    # Every demo claim gets a verdict, in findings.md and findings.json alike.
    verdicts = json.loads((tmp_path / "findings.json").read_text())["claims"]
    assert [v["claim"] for v in verdicts] == [c.text for c in study.findings]
    findings_md = (tmp_path / "findings.md").read_text()
    for i, v in enumerate(verdicts, 1):
        assert f"| {i} | {v['claim']} | **{v['verdict']}** |" in findings_md
    # Stage 2 scores 20-70% against stage 1's 2% on GQA: the stage claim's GQA comparisons all show it.
    stage_claim = verdicts[0]
    assert all(c["outcome"] == "shows it" for c in stage_claim["comparisons"] if c["column"] == "GQA")
    for name, exp_ids in study.tables.items():
        rows = _csv_rows(tmp_path / "tables" / f"{name}.csv")
        assert {e for r in rows for e in r["experiments"].split(";")} == set(exp_ids)
        for r in rows:
            assert float(r["GQA_low"]) <= float(r["GQA"]) <= float(r["GQA_high"])
            assert r["POPE_low"] == ""  # no per-question scores in this file: no interval
            if r["stage"] == "1":
                assert r["GQA_best"] == "False"
    t1 = _csv_rows(tmp_path / "tables" / "table1_llm.csv")
    assert [(r["block"], r["row"]) for r in t1] == [
        ("Small-Scale MLLMs", "Gemma-2-2B"), ("Small-Scale MLLMs", "Gemma-2-2B (stage 1 only)"),
        ("Small-Scale MLLMs", "Phi-4-3.8B"), ("Small-Scale MLLMs", "Phi-4-3.8B (stage 1 only)"),
        ("Medium-Scale MLLMs", "LLaMA-3.1-8B"), ("Medium-Scale MLLMs", "LLaMA-3.1-8B (stage 1 only)"),
    ]  # fmt: skip
    diffs = _csv_rows(tmp_path / "tables" / "table4_pretrain_data_differences.csv")
    assert {(d["row"], d["baseline"]) for d in diffs} == {("Recap-like (demo)", "LCS-like (demo)")}
    assert {d["column"]: d["paired"] for d in diffs} == {"GQA": "True", "POPE": "", AVERAGE: ""}
    assert {d["column"]: d["low"] == "" for d in diffs} == {"GQA": False, "POPE": True, AVERAGE: True}

    (tmp_path / "eval" / "stage2" / study.experiments[0].id / "scores.json").unlink()
    assert main(["report", "--params", str(PARAMS), "--study", "demo", "--scores-dir", str(tmp_path / "eval"),
                 "--out", str(tmp_path / "tables")]) == 2  # fmt: skip
    assert "run its evaluation first" in capsys.readouterr().err


def test_unreadable_scores_are_a_user_error(tmp_path):
    with pytest.raises(UserError, match="run its evaluation first"):
        load_scores(tmp_path / "missing.json", "x_y_z")
    (tmp_path / "bad.json").write_text(
        json.dumps({"columns": {"GQA": 1.0}, "samples": {"GQA": {"kind": "mean"}}})
    )
    with pytest.raises(UserError, match="per-sample scores are unreadable"):
        load_scores(tmp_path / "bad.json", "x_y_z")


def test_a_finished_run_ends_on_where_the_results_are(tmp_path):
    from llava_more.report.summary import finished_lines

    assert finished_lines("demo", tmp_path) == []  # nothing made yet: nothing to point at
    (tmp_path / "results/demo/tables").mkdir(parents=True)
    (tmp_path / "results/demo/tables/table1_llm.md").write_text("x")
    (tmp_path / "results/demo/findings.md").write_text("x")
    claims = [{"verdict": "holds"}, {"verdict": "holds"}, {"verdict": "within noise"}]
    (tmp_path / "results/demo/findings.json").write_text(json.dumps({"claims": claims}))
    (tmp_path / "results/demo/report.html").write_text("x")
    assert finished_lines("demo", tmp_path) == [
        "Results of study demo:",
        "  tables:   results/demo/tables/ (table1_llm; also .csv and .tex)",
        "  findings: results/demo/findings.md (2 holds, 1 within noise)",
        "  report:   results/demo/report.html (tables, findings and figures in one page)",
    ]
