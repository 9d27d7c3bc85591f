"""A ``tables.TableView`` as Markdown, CSV and LaTeX files: ``<table>.md``, ``<table>.csv`` (one line
per row, every number in its own field), ``<table>_differences.csv`` (one line per row, column and
baseline) and ``<table>.tex`` (booktabs).
"""

from __future__ import annotations

import csv
from pathlib import Path

from llava_more.eval.benchmarks import AVERAGE
from llava_more.report.bootstrap import Estimate
from llava_more.report.layout import COLUMN_GROUPS, column_label
from llava_more.report.tables import Cell, TableRow, TableView

DAGGER = "†"


def number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def interval_text(estimate: Estimate | None) -> str:
    if estimate is None or not estimate.has_interval:
        return ""
    return f"[{estimate.low:.1f}, {estimate.high:.1f}]"


def difference_text(estimate: Estimate | None) -> str:
    if estimate is None:
        return ""
    text = number(estimate.value, signed=True)
    if estimate.has_interval:
        text += f" [{estimate.low:+.1f}, {estimate.high:+.1f}]" + ("*" if estimate.excludes_zero() else "")
    return text


def cell_parts(cell: Cell) -> tuple[str, str, str]:
    """(value, interval and spread, paper and delta) of a cell, as plain text."""
    ours = cell.ours
    value = number(ours.value) if ours else ""
    extra = interval_text(ours)
    if ours is not None and ours.spread is not None:
        extra = (extra + f" σ{ours.spread:.1f}").strip()
    paper = ""
    if cell.paper is not None:
        paper = f"paper {number(cell.paper)}" + (
            f", Δ {number(cell.delta, signed=True)}" if cell.delta is not None else ""
        )
    return value, extra, paper


def markdown_cell(cell: Cell) -> str:
    value, extra, paper = cell_parts(cell)
    if value and cell.best:
        value = f"**{value}**"
    if value and cell.flag:
        value += DAGGER
    text = " ".join(p for p in (value, extra) if p)
    return "<br>".join(p for p in (text, paper) if p)


def _header(view: TableView) -> list[str]:
    return ["Model", *view.layout.info_columns, *(column_label(c) for c in view.columns)]


def markdown(view: TableView) -> str:
    header = _header(view)
    width = len(header)
    lines = [f"## {view.title}", ""]
    lines += ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (width - 1)]
    for block in view.blocks:
        if block.title:
            lines.append(f"| ***{block.title}*** |" + " |" * (width - 1))
        section = None
        for row in block.rows:
            if row.spec.section and row.spec.section != section:
                lines.append(f"| *{row.spec.section}* |" + " |" * (width - 1))
            section = row.spec.section
            info = [row.spec.info.get(name, "") for name in view.layout.info_columns]
            lines.append(
                "| "
                + " | ".join([row.label, *info, *(markdown_cell(row.cells[c]) for c in view.columns)])
                + " |"
            )
    diffs = [row for row in view.rows() if row.differences]
    if diffs:
        lines += ["", "Differences within blocks (row − baseline):", ""]
        lines += ["| Model | Baseline | " + " | ".join(column_label(c) for c in view.columns) + " |"]
        lines += ["|---|---|" + "---:|" * len(view.columns)]
        for row in diffs:
            cells = [difference_text(row.differences.get(c)) for c in view.columns]
            lines.append("| " + " | ".join([row.label, row.baseline.label, *cells]) + " |")  # type: ignore[union-attr]
    lines += [""] + [f"- {note}" for note in view.notes]
    sources = [row for row in view.rows() if row.experiments]
    if sources:
        lines += ["", "Experiments behind the rows:", ""]
        for row in sources:
            where = f" ({_block_of(view, row)})" if _block_of(view, row) else ""
            lines.append(f"- {row.label}{where}: {', '.join(row.experiments)}")
    return "\n".join(lines) + "\n"


def _block_of(view: TableView, row: TableRow) -> str | None:
    for block in view.blocks:
        if any(r is row for r in block.rows):
            return block.title
    return None


# --------------------------------------------------------------------------- CSV


def write_csv(view: TableView, path: Path) -> None:
    header = [
        "table",
        "block",
        "section",
        "row",
        "stage",
        "llm",
        "vision",
        "s2",
        "pretrain",
        "experiments",
        "seeds",
    ]
    header += list(view.layout.info_columns)
    for c in view.columns:
        header += [c, f"{c}_low", f"{c}_high", f"{c}_seed_sd", f"{c}_best", f"{c}_flag"]
        if view.with_paper:
            header += [f"{c}_paper", f"{c}_delta"]
    header.append("paper_row")
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for block in view.blocks:
            for row in block.rows:
                k = row.key
                line: list[object] = [view.name, block.title or "", row.spec.section or "", row.label, k.stage, k.llm,
                                      k.vision, k.s2, k.pretrain, ";".join(row.experiments),
                                      ";".join("" if s is None else str(s) for s in row.seeds)]  # fmt: skip
                line += [row.spec.info.get(name, "") for name in view.layout.info_columns]
                for c in view.columns:
                    cell = row.cells[c]
                    ours = cell.ours
                    line += [
                        _round(ours.value if ours else None),
                        _round(ours.low if ours else None),
                        _round(ours.high if ours else None),
                        _round(ours.spread if ours else None),
                        cell.best,
                        _round(cell.flag),
                    ]
                    if view.with_paper:
                        line += [_round(cell.paper), _round(cell.delta)]
                line.append(row.spec.paper.label() if row.spec.paper and any(
                    row.cells[c].paper is not None for c in view.columns) else "")  # fmt: skip
                writer.writerow(line)


def write_differences_csv(view: TableView, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["table", "block", "row", "baseline", "column", "difference", "low", "high", "paired",
                         "excludes_zero"])  # fmt: skip
        for block in view.blocks:
            for row in block.rows:
                for column, diff in row.differences.items():
                    writer.writerow([view.name, block.title or "", row.label, row.baseline.label,  # type: ignore[union-attr]
                                     column, _round(diff.value), _round(diff.low), _round(diff.high),
                                     "" if diff.paired is None else diff.paired, diff.excludes_zero()])  # fmt: skip


def _round(value: float | None) -> object:
    return "" if value is None else round(value, 4)


# --------------------------------------------------------------------------- LaTeX


def latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"),
                          ("Δ", r"$\Delta$"), ("−", "-"), ("σ", r"$\sigma$"), ("✓", r"\checkmark"),
                          ("✗", r"$\times$"), (DAGGER, r"$^\dagger$")):  # fmt: skip
        text = text.replace(char, escaped)
    return text


def latex_cell(cell: Cell) -> str:
    value, extra, paper = cell_parts(cell)
    if not value and not paper:
        return ""
    if value and cell.best:
        value = rf"\textbf{{{value}}}"
    if value and cell.flag:
        value += r"$^\dagger$"
    lines = [value + (rf"\,{{\tiny {latex_escape(extra)}}}" if extra else "")] if value else []
    if paper:
        lines.append(rf"{{\tiny {latex_escape(paper)}}}")
    return lines[0] if len(lines) == 1 else r"\shortstack[r]{" + r" \\ ".join(lines) + "}"


def _column_groups(view: TableView) -> list[tuple[str, int]] | None:
    """The paper's "VQA / MLLM Benchmarks" header spans, when the columns follow its order."""
    spans, order = [], []
    for title, members in COLUMN_GROUPS:
        shown = [c for c in view.benchmarks if c in members]
        if shown:
            spans.append((title, len(shown)))
            order += shown
    return spans if tuple(order) == view.benchmarks else None


def latex(view: TableView) -> str:
    width = 1 + len(view.layout.info_columns) + len(view.columns)
    spec = "l" + "c" * len(view.layout.info_columns) + "r" * len(view.columns)
    lines = [f"% {view.title}: generated by `llava-more report` (needs booktabs)", rf"\begin{{tabular}}{{{spec}}}",
             r"\toprule"]  # fmt: skip
    groups = _column_groups(view)
    if groups:
        first = 2 + len(view.layout.info_columns)
        cells, rules = [""] * (first - 1), []
        for title, span in groups:
            cells.append(rf"\multicolumn{{{span}}}{{c}}{{{title}}}")
            rules.append(rf"\cmidrule(lr){{{first}-{first + span - 1}}}")
            first += span
        lines += [" & ".join(cells) + (" &" if AVERAGE in view.columns else "") + r" \\", " ".join(rules)]
    lines += [" & ".join(latex_escape(h) for h in _header(view)) + r" \\", r"\midrule"]
    for block in view.blocks:
        if block.title:
            lines.append(rf"\multicolumn{{{width}}}{{l}}{{\textit{{{latex_escape(block.title)}}}}} \\")
        section = None
        for row in block.rows:
            if row.spec.section and row.spec.section != section:
                lines.append(
                    rf"\multicolumn{{{width}}}{{l}}{{\quad\textit{{{latex_escape(row.spec.section)}}}}} \\"
                )
            section = row.spec.section
            info = [latex_escape(row.spec.info.get(name, "")) for name in view.layout.info_columns]
            cells = [latex_cell(row.cells[c]) for c in view.columns]
            lines.append(" & ".join([latex_escape(row.label), *info, *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [f"% {latex_escape(note)}" for note in view.notes]
    return "\n".join(lines) + "\n"


def write_table(view: TableView, out_dir: Path) -> dict[str, Path]:
    """Write one table in every format; returns ``{"md", "csv", "tex", "differences"}`` paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "md": out_dir / f"{view.name}.md",
        "csv": out_dir / f"{view.name}.csv",
        "tex": out_dir / f"{view.name}.tex",
        "differences": out_dir / f"{view.name}_differences.csv",
    }
    paths["md"].write_text(markdown(view), encoding="utf-8")
    paths["tex"].write_text(latex(view), encoding="utf-8")
    write_csv(view, paths["csv"])
    write_differences_csv(view, paths["differences"])
    return paths
