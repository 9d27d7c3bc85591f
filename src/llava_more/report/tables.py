"""The study's result tables: model x benchmark, as Markdown, CSV and LaTeX.

Columns are the paper's 13 benchmark columns (those any row has). The best value of each column
among the instruction-tuned (stage 2) rows is bold. When a reference CSV is given and an
experiment reproduces a paper row, that row's published values follow it (Markdown/LaTeX: a
"paper" row and a "Δ" row under it; CSV: ``<column>_paper`` and ``<column>_delta`` columns).
Columns whose score carries a flag (MMBench answers no rule could match, counted wrong) get a
dagger and a footnote.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from llava_more.errors import UserError
from llava_more.eval.benchmarks import COLUMNS
from llava_more.report.reference import PaperKey, PaperResults, paper_row

DAGGER = "†"


@dataclass(frozen=True)
class ExperimentScores:
    """One evaluated model: an experiment at a training stage, and its column values."""

    experiment_id: str
    columns: dict[str, float]
    flags: dict[str, dict[str, float]] = field(default_factory=dict)
    stage: int = 2
    llm: str | None = None
    vision: str | None = None
    s2: bool = False
    pretrain: str | None = None

    @property
    def label(self) -> str:
        return self.experiment_id if self.stage == 2 else f"{self.experiment_id} (stage {self.stage} only)"

    def paper_key(self, table: str) -> PaperKey | None:
        if self.stage != 2 or self.llm is None or self.vision is None or self.pretrain is None:
            return None
        return paper_row(table, self.llm, self.vision, self.s2, self.pretrain)


def load_scores(
    path: str | Path, experiment_id: str, *, stage: int = 2, **experiment: object
) -> ExperimentScores:
    """Read a ``scores.json`` written by ``run_lmms_eval``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no scores for {experiment_id} (stage {stage}); run its evaluation first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        columns = {k: float(v) for k, v in data["columns"].items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise UserError(
            f"{path}: not a scores.json from `llava-more evaluate` ({err}); re-run the evaluation"
        ) from None
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise UserError(f"{path}: unknown column(s) {', '.join(unknown)}; known: {', '.join(COLUMNS)}")
    return ExperimentScores(experiment_id, columns, data.get("flags", {}), stage, **experiment)  # type: ignore[arg-type]


@dataclass
class _Row:
    scores: ExperimentScores
    paper: dict[str, float]
    paper_label: str | None


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _flagged(scores: ExperimentScores, column: str) -> float | None:
    """The share of unreadable answers behind a flagged column (None: nothing to mark)."""
    values = [v for v in scores.flags.get(column, {}).values() if v]
    return max(values) if values else None


def _best(rows: list[_Row], columns: list[str]) -> dict[str, float]:
    best = {}
    for column in columns:
        values = [
            r.scores.columns[column] for r in rows if r.scores.stage == 2 and column in r.scores.columns
        ]
        if values:
            best[column] = max(values)
    return best


def _cell(row: _Row, column: str, best: dict[str, float], latex: bool = False) -> str:
    value = row.scores.columns.get(column)
    if value is None:
        return ""
    text = _fmt(value)
    if row.scores.stage == 2 and best.get(column) == value:
        text = f"\\textbf{{{text}}}" if latex else f"**{text}**"
    if _flagged(row.scores, column):
        text += r"$^\dagger$" if latex else DAGGER
    return text


def _footnotes(rows: list[_Row], columns: list[str]) -> list[str]:
    notes = []
    for row in rows:
        for column in columns:
            share = _flagged(row.scores, column)
            if share:
                notes.append(f"{DAGGER} {row.scores.label}, {column}: scored without a GPT judge; "
                             f"{share * 100:.1f}% of answers matched no option and count as wrong.")  # fmt: skip
    return notes


def _markdown(name: str, rows: list[_Row], columns: list[str], best: dict[str, float]) -> str:
    header = ["Model", *columns]
    lines = [f"## {name}", "", "| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join([row.scores.label, *(_cell(row, c, best) for c in columns)]) + " |")
        if row.paper:
            lines.append(
                "| ↳ paper: "
                + str(row.paper_label)
                + " | "
                + " | ".join(_fmt(row.paper.get(c)) for c in columns)
                + " |"
            )
            deltas = [_delta(row, c) for c in columns]
            lines.append(
                "| ↳ Δ (ours − paper) | "
                + " | ".join("" if d is None else f"{d:+.1f}" for d in deltas)
                + " |"
            )
    notes = _footnotes(rows, columns)
    lines += ["", f"Bold: best {'' if len(rows) > 1 else 'and only '}instruction-tuned model per column."]
    return "\n".join(lines + [""] + notes) + "\n"


def _delta(row: _Row, column: str) -> float | None:
    ours, paper = row.scores.columns.get(column), row.paper.get(column)
    return None if ours is None or paper is None else ours - paper


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"),
                          ("Δ", r"$\Delta$"), ("−", "-"), ("↳", r"$\hookrightarrow$"), (DAGGER, r"$^\dagger$")):  # fmt: skip
        text = text.replace(char, escaped)
    return text


def _latex(name: str, rows: list[_Row], columns: list[str], best: dict[str, float]) -> str:
    lines = [
        f"% {name}: generated by `llava-more report`",
        r"\begin{tabular}{l" + "r" * len(columns) + "}",
        r"\toprule",
        " & ".join(["Model", *map(_latex_escape, columns)]) + r" \\",
        r"\midrule",
    ]
    for row in rows:
        cells = [_cell(row, c, best, latex=True) for c in columns]
        lines.append(" & ".join([_latex_escape(row.scores.label), *cells]) + r" \\")
        if row.paper:
            lines.append(
                " & ".join(
                    [_latex_escape(f"↳ paper: {row.paper_label}"), *(_fmt(row.paper.get(c)) for c in columns)]
                )
                + r" \\"
            )
            deltas = [_delta(row, c) for c in columns]
            lines.append(
                " & ".join([_latex_escape("↳ Δ"), *("" if d is None else f"{d:+.1f}" for d in deltas)])
                + r" \\"
            )
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [f"% {_latex_escape(note)}" for note in _footnotes(rows, columns)]
    return "\n".join(lines) + "\n"


def _csv(path: Path, rows: list[_Row], columns: list[str], best: dict[str, float]) -> None:
    with_paper = any(r.paper for r in rows)
    header = ["experiment", "stage", "llm", "vision", "s2", "pretrain"]
    for c in columns:
        header += [c, f"{c}_best", f"{c}_flag"] + ([f"{c}_paper", f"{c}_delta"] if with_paper else [])
    if with_paper:
        header.append("paper_row")
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            s = row.scores
            line: list[object] = [
                s.experiment_id,
                s.stage,
                s.llm or "",
                s.vision or "",
                s.s2,
                s.pretrain or "",
            ]
            for c in columns:
                value = s.columns.get(c)
                is_best = value is not None and s.stage == 2 and best.get(c) == value
                flag = _flagged(s, c)
                line += [
                    "" if value is None else round(value, 4),
                    is_best,
                    "" if flag is None else round(flag, 4),
                ]
                if with_paper:
                    delta = _delta(row, c)
                    line += [row.paper.get(c, ""), "" if delta is None else round(delta, 4)]
            if with_paper:
                line.append(row.paper_label or "")
            writer.writerow(line)


def build_tables(
    rows: list[ExperimentScores],
    tables: dict[str, list[str]],
    out_dir: str | Path,
    reference_csv: str | Path | None = None,
) -> dict[str, dict[str, Path]]:
    """Write ``<table>.md``, ``.csv`` and ``.tex`` for each table (name -> experiment ids, in order).

    A table's rows are every entry of ``rows`` whose experiment is listed (stage 2 first, then an
    experiment's stage-1 row). Returns ``{table: {"md": path, "csv": path, "tex": path}}``.
    """
    reference = PaperResults(reference_csv) if reference_csv else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, dict[str, Path]] = {}
    for name, experiment_ids in tables.items():
        selected = []
        for exp_id in experiment_ids:
            matches = sorted((r for r in rows if r.experiment_id == exp_id), key=lambda r: -r.stage)
            if not matches:
                raise UserError(
                    f"table {name}: no scores for experiment {exp_id}; evaluate it before the report"
                )
            selected += matches
        table_rows = []
        for scores in selected:
            key = scores.paper_key(name) if reference else None
            paper = reference.values(key) if reference and key else {}
            table_rows.append(_Row(scores, paper, key.label() if key and paper else None))
        columns = [c for c in COLUMNS if any(c in r.scores.columns for r in table_rows)]
        best = _best(table_rows, columns)
        paths = {"md": out / f"{name}.md", "csv": out / f"{name}.csv", "tex": out / f"{name}.tex"}
        paths["md"].write_text(_markdown(name, table_rows, columns, best), encoding="utf-8")
        paths["tex"].write_text(_latex(name, table_rows, columns, best), encoding="utf-8")
        _csv(paths["csv"], table_rows, columns, best)
        written[name] = paths
    return written
