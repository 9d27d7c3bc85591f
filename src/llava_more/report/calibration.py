"""The calibration view of a published study: per benchmark, our score minus the paper's, per checkpoint.

A published study evaluates the released checkpoints themselves, so any gap to the paper's numbers is
the evaluation's (harness version, task prompts, scoring, precision: ``docs/PROTOCOL.md``, "Evaluation
harness and task versions"), not the training's. The view shows at a glance which benchmark columns
this evaluation reproduces: a column counts as reproduced when every checkpoint's score lies within
``tolerance(column, paper value)`` of the paper's (1.0 point on the 0-100 columns; 1% of the paper's
value for MME-P and MME-C, which add up per-subtask scores to about 2,000 and 800 points). The
threshold is a convention of this view (the paper prints one decimal and states no error bars).

Each checkpoint is compared with the first paper row it reproduces, in the order of
``REFERENCE_TABLES`` (the paper's four tables, then the README table, which holds the LLaMA-3.1
S2 and SigLIP variants the paper's tables do not).

Files: ``calibration.md`` and ``calibration.tex`` (deltas, then per column the mean delta, the
largest absolute delta and the verdict), ``calibration.csv`` (one line per checkpoint and column)
and ``calibration_summary.csv`` (one line per column).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from llava_more.eval.benchmarks import COLUMNS
from llava_more.report.formats import latex_escape
from llava_more.report.layout import PaperKey, paper_row
from llava_more.report.reference import PaperResults
from llava_more.report.scores import ExperimentScores

REFERENCE_TABLES = ("table1_llm", "table2_vision", "table3_s2", "table4_pretrain_data", "readme")
ABSOLUTE_TOLERANCE = 1.0
RELATIVE_TOLERANCE = {"MME-P": 0.01, "MME-C": 0.01}


def tolerance(column: str, paper_value: float) -> float:
    """How far from the paper's value a score may land and still count as reproduced."""
    if column in RELATIVE_TOLERANCE:
        return RELATIVE_TOLERANCE[column] * abs(paper_value)
    return ABSOLUTE_TOLERANCE


@dataclass(frozen=True)
class Calibrated:
    """One published checkpoint next to the paper row it reproduces."""

    scores: ExperimentScores
    key: PaperKey
    paper: dict[str, float]

    def delta(self, column: str) -> float | None:
        ours, theirs = self.scores.columns.get(column), self.paper.get(column)
        return None if ours is None or theirs is None else ours - theirs

    def within(self, column: str) -> bool | None:
        delta = self.delta(column)
        return None if delta is None else abs(delta) <= tolerance(column, self.paper[column]) + 1e-9


@dataclass(frozen=True)
class ColumnSummary:
    column: str
    models: int
    mean_delta: float
    max_abs_delta: float
    within: int

    @property
    def reproduced(self) -> bool:
        return self.within == self.models


def match_paper_rows(rows: list[ExperimentScores], reference: PaperResults) -> list[Calibrated]:
    """Every instruction-tuned row with published numbers, paired with its paper row."""
    matched = []
    for scores in rows:
        if scores.stage != 2 or scores.llm is None or scores.vision is None or scores.pretrain is None:
            continue
        for table in REFERENCE_TABLES:
            key = paper_row(table, scores.key)
            values = reference.values(key) if key else {}
            if values:
                matched.append(Calibrated(scores, key, values))
                break
    return matched


def summarize(calibrated: list[Calibrated]) -> list[ColumnSummary]:
    out = []
    for column in COLUMNS:
        deltas = [(c.delta(column), c.within(column)) for c in calibrated if c.delta(column) is not None]
        if not deltas:
            continue
        values = [d for d, _ in deltas]
        out.append(
            ColumnSummary(
                column=column,
                models=len(values),
                mean_delta=sum(values) / len(values),
                max_abs_delta=max(abs(v) for v in values),
                within=sum(bool(w) for _, w in deltas),
            )
        )
    return out


def _signed(value: float | None) -> str:
    return "" if value is None else f"{value:+.1f}"


def _verdict(summary: ColumnSummary) -> str:
    return f"{'yes' if summary.reproduced else 'no'} ({summary.within}/{summary.models})"


def _label(c: Calibrated) -> str:
    return f"{c.key.label()} [{c.key.table}]"


def _intro(unmatched: list[str]) -> list[str]:
    lines = [
        "Ours minus the paper's score, for the released checkpoints evaluated here. A column is",
        f"reproduced when every checkpoint lies within {ABSOLUTE_TOLERANCE:g} point of the paper's value "
        f"(MME-P, MME-C: within {RELATIVE_TOLERANCE['MME-P']:.0%} of it).",
    ]
    if unmatched:
        lines += ["", "Without published numbers (not compared): " + ", ".join(unmatched) + "."]
    return lines


def _markdown(calibrated: list[Calibrated], summary: list[ColumnSummary], unmatched: list[str]) -> str:
    columns = [s.column for s in summary]
    by_column = {s.column: s for s in summary}
    lines = ["## calibration", "", *_intro(unmatched), ""]
    if not calibrated:
        return "\n".join([*lines, "No evaluated checkpoint reproduces a row with published numbers."]) + "\n"
    lines += ["| Model | paper row | " + " | ".join(columns) + " |", "|---|---|" + "---:|" * len(columns)]
    for c in calibrated:
        cells = [_signed(c.delta(col)) for col in columns]
        lines.append(f"| {c.scores.label} | {_label(c)} | " + " | ".join(cells) + " |")
    for name, cell in (
        ("mean Δ", lambda s: f"{s.mean_delta:+.1f}"),
        ("max \\|Δ\\|", lambda s: f"{s.max_abs_delta:.1f}"),
        ("reproduced", _verdict),
    ):
        lines.append(f"| {name} | | " + " | ".join(cell(by_column[col]) for col in columns) + " |")
    return "\n".join(lines) + "\n"


def _latex(calibrated: list[Calibrated], summary: list[ColumnSummary]) -> str:
    columns = [s.column for s in summary]
    by_column = {s.column: s for s in summary}
    lines = [
        "% calibration: ours minus paper, generated by `llava-more report`",
        r"\begin{tabular}{ll" + "r" * len(columns) + "}",
        r"\toprule",
        " & ".join(["Model", "paper row", *map(latex_escape, columns)]) + r" \\",
        r"\midrule",
    ]
    for c in calibrated:
        cells = [_signed(c.delta(col)) for col in columns]
        lines.append(" & ".join([latex_escape(c.scores.label), latex_escape(_label(c)), *cells]) + r" \\")
    lines.append(r"\midrule")
    lines.append(
        " & ".join([r"mean $\Delta$", "", *(f"{by_column[c].mean_delta:+.1f}" for c in columns)]) + r" \\"
    )
    lines.append(
        " & ".join([r"max $|\Delta|$", "", *(f"{by_column[c].max_abs_delta:.1f}" for c in columns)]) + r" \\"
    )
    lines.append(
        " & ".join(["reproduced", "", *(latex_escape(_verdict(by_column[c])) for c in columns)]) + r" \\"
    )
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def build_calibration(
    rows: list[ExperimentScores], reference_csv: str | Path, out_dir: str | Path
) -> dict[str, Path]:
    """Write the calibration view of ``rows`` (a published study's scores) into ``out_dir``."""
    reference = PaperResults(reference_csv)
    calibrated = match_paper_rows(rows, reference)
    matched = {id(c.scores) for c in calibrated}
    unmatched = [r.label for r in rows if id(r) not in matched]
    summary = summarize(calibrated)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "md": out / "calibration.md",
        "tex": out / "calibration.tex",
        "csv": out / "calibration.csv",
        "summary": out / "calibration_summary.csv",
    }
    paths["md"].write_text(_markdown(calibrated, summary, unmatched), encoding="utf-8")
    paths["tex"].write_text(_latex(calibrated, summary), encoding="utf-8")
    with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "experiment",
                "paper_table",
                "paper_row",
                "column",
                "ours",
                "paper",
                "delta",
                "tolerance",
                "within",
            ]
        )
        for c in calibrated:
            for column in COLUMNS:
                delta = c.delta(column)
                if delta is None:
                    continue
                writer.writerow([
                    c.scores.experiment_id, c.key.table, c.key.label(), column, round(c.scores.columns[column], 4),
                    c.paper[column], round(delta, 4), round(tolerance(column, c.paper[column]), 4), c.within(column),
                ])  # fmt: skip
    with open(paths["summary"], "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["column", "models", "mean_delta", "max_abs_delta", "within", "reproduced"])
        for s in summary:
            writer.writerow(
                [
                    s.column,
                    s.models,
                    round(s.mean_delta, 4),
                    round(s.max_abs_delta, 4),
                    s.within,
                    s.reproduced,
                ]
            )
    return paths
