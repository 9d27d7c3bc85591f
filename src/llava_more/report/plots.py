"""One bar chart per benchmark column: every evaluated model, with the paper's value where known."""

from __future__ import annotations

import re
from pathlib import Path

from llava_more.eval.benchmarks import COLUMNS
from llava_more.report.reference import PaperResults
from llava_more.report.tables import ExperimentScores

PAPER_TABLES = ("table1_llm", "table2_vision", "table3_s2", "table4_pretrain_data")


def _file_name(column: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", column).strip("_").lower() + ".png"


def plot_benchmarks(
    rows: list[ExperimentScores],
    out_dir: str | Path,
    reference_csv: str | Path | None = None,
    tables: tuple[str, ...] = PAPER_TABLES,
) -> list[Path]:
    """Write ``<column>.png`` for every column any row has; the paper's values as red markers where
    a row reproduces a row of one of ``tables``."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on cluster nodes
    import matplotlib.pyplot as plt

    reference = PaperResults(reference_csv) if reference_csv else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for column in COLUMNS:
        plotted = [r for r in rows if column in r.columns]
        if not plotted:
            continue
        labels = [r.label for r in plotted]
        values = [r.columns[column] for r in plotted]
        fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(plotted) + 2), 3.6))
        colors = ["tab:blue" if r.stage == 2 else "tab:gray" for r in plotted]
        ax.bar(range(len(plotted)), values, color=colors)
        for i, row in enumerate(plotted):
            keys = [k for k in (row.paper_key(t) for t in tables) if k] if reference else []
            paper = reference.values(keys[0]).get(column) if reference and keys else None
            if paper is not None:
                ax.plot([i - 0.4, i + 0.4], [paper, paper], color="tab:red", linewidth=2,
                        label="paper" if "paper" not in ax.get_legend_handles_labels()[1] else None)  # fmt: skip
        ax.set_xticks(range(len(plotted)), labels, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(column)
        ax.set_title(f"{column} (grey: stage 1 only)" if any(r.stage != 2 for r in plotted) else column)
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / _file_name(column)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written
