"""The report's figures (PNG): the paper's radar comparison (its Fig. 1), a model x benchmark
heatmap against each benchmark's chance level and, for real-size studies, ours against the paper.

- ``radar.png``: a few models over every benchmark, each axis scaled from the lowest to the highest
  value plotted on it (as the paper's Fig. 1 does). The models are the paper's Fig. 1 trio when the
  study has them (LLaVA-MORE-9B with SigLIP2, LLaVA-1.5-7B, LLaVA-1.5-LLaMA3-8B), otherwise the
  table-1 rows and the study's best model by average.
- ``heatmap.png``: every evaluated row x benchmark; the colour is the share of the way from chance
  (white) to a perfect score, so a cell at chance level is white whatever its benchmark's scale, and
  each column header names its chance level (from the benchmark's own questions).
- ``ours_vs_paper.png``: every cell with a published value, ours (with its interval) against the
  paper's, on a percentage scale (MME as a share of its maximum).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llava_more.eval.benchmarks import COLUMNS
from llava_more.report.layout import RowKey, column_label, describe
from llava_more.report.results import SCALE_MAX, StudyResults, normalised
from llava_more.report.tables import TableView

FIGURE_ONE = (
    RowKey("gemma2-9b", "siglip2-so400m-384", False, "lcs"),
    RowKey("vicuna-7b-v1.5", "clip-l-336", False, "lcs"),
    RowKey("llama3-8b", "clip-l-336", False, "lcs"),
)
MAX_RADAR_MODELS = 6


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on cluster nodes
    import matplotlib.pyplot as plt

    return plt


def _label(key: RowKey, views: list[TableView]) -> str:
    """Table 1's (or the README table's) name of the row, else its settings."""
    for view in views:
        if view.name in ("table1_llm", "readme"):
            for row in view.rows():
                if row.key == key:
                    return row.label
    return describe(key) + ("" if key.stage == 2 else " (stage 1 only)")


def row_order(views: list[TableView], results: StudyResults) -> list[RowKey]:
    """Every evaluated row, in the order the tables print them (then any others)."""
    order: list[RowKey] = []
    for view in views:
        for row in view.rows():
            if row.key in results.rows and row.key not in order:
                order.append(row.key)
    order += sorted(k for k in results.rows if k not in order)
    return order


def radar_models(results: StudyResults, views: list[TableView]) -> list[RowKey]:
    if all(k in results.rows for k in FIGURE_ONE):
        return list(FIGURE_ONE)
    columns = tuple(c for c in COLUMNS if c in results.columns())
    tuned = [k for k in row_order(views, results) if k.stage == 2]
    table1 = next((v for v in views if v.name == "table1_llm"), None)
    chosen = [r.key for r in table1.rows() if r.key.stage == 2 and r.key in results.rows] if table1 else []
    averages = {k: results.average(k, columns) for k in tuned}
    best = max((k for k in tuned if averages[k] is not None), key=lambda k: averages[k].value, default=None)
    if best is not None and best not in chosen:
        chosen.append(best)
    return (chosen or tuned)[:MAX_RADAR_MODELS]


def radar(results: StudyResults, views: list[TableView], path: Path) -> Path | None:
    models = radar_models(results, views)
    columns = [c for c in COLUMNS if all(results.has(k, c) for k in models)]
    if len(models) < 1 or len(columns) < 3:
        return None
    plt = _pyplot()
    values = np.array([[results.value(k, c) for c in columns] for k in models])
    low, high = values.min(axis=0), values.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    radius = 0.25 + 0.75 * (values - low) / span  # each axis from its lowest to its highest value
    angles = np.linspace(0, 2 * np.pi, len(columns), endpoint=False)
    fig, ax = plt.subplots(figsize=(6.4, 6.4), subplot_kw={"polar": True})
    for key, r in zip(models, radius, strict=True):
        ring = np.r_[r, r[:1]]
        ax.plot(np.r_[angles, angles[:1]], ring, linewidth=2, label=_label(key, views))
        ax.fill(np.r_[angles, angles[:1]], ring, alpha=0.08)
    ax.set_xticks(
        angles, [f"{column_label(c)}\n{hi:.1f}" for c, hi in zip(columns, high, strict=True)], fontsize=8
    )
    ax.set_yticks([])
    ax.set_ylim(0, 1.05)
    ax.set_title(
        "Each axis from the lowest to the highest value plotted (highest under the name)", fontsize=8
    )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), fontsize=8, ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def above_chance(column: str, value: float, chance: float | None) -> float:
    """How far ``value`` is from the column's chance level (0) to a perfect score (1); below chance
    is negative. An unknown chance level counts as 0."""
    top = SCALE_MAX.get(column, 100.0)
    chance = chance or 0.0
    return (value - chance) / (top - chance) if top > chance else 0.0


def heatmap(results: StudyResults, views: list[TableView], path: Path) -> Path | None:
    rows = row_order(views, results)
    columns = [c for c in COLUMNS if c in results.columns()]
    if not rows or not columns:
        return None
    plt = _pyplot()
    shade = np.full((len(rows), len(columns)), np.nan)
    for j, column in enumerate(columns):
        for i, key in enumerate(rows):
            value = results.value(key, column)
            if value is not None:
                shade[i, j] = above_chance(column, value, results.chance(column))
    fig, ax = plt.subplots(figsize=(1.0 * len(columns) + 3.5, 0.42 * len(rows) + 1.8))
    image = ax.imshow(np.clip(shade, -0.5, 1.0), cmap="RdBu", vmin=-1.0, vmax=1.0, aspect="auto")
    for i, key in enumerate(rows):
        for j, column in enumerate(columns):
            value = results.value(key, column)
            if value is not None:
                ax.text(
                    j,
                    i,
                    f"{value:.1f}" if value < 1000 else f"{value:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                )
    chances = [results.chance(c) for c in columns]
    ax.set_xticks(range(len(columns)),
                  [f"{column_label(c)}\nchance {'?' if ch is None else f'{ch:.0f}'}" for c, ch in zip(columns, chances,
                                                                                                    strict=True)],
                  fontsize=7)  # fmt: skip
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(rows)), [_label(k, views) for k in rows], fontsize=7)
    bar = fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    bar.set_label("share of the way from chance (0) to a perfect score (1)", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def ours_vs_paper(views: list[TableView], path: Path) -> Path | None:
    points: dict[str, list[tuple[float, float, float, float]]] = {}
    seen = set()
    for view in views:
        for row in view.rows():
            for column in view.benchmarks:
                cell = row.cells[column]
                if cell.ours is None or cell.paper is None or (row.key, column) in seen:
                    continue
                seen.add((row.key, column))
                ours = cell.ours
                low = ours.low if ours.has_interval else ours.value
                high = ours.high if ours.has_interval else ours.value
                points.setdefault(column, []).append(
                    tuple(normalised(column, v) for v in (cell.paper, ours.value, low, high))  # type: ignore[misc]
                )
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 6.0))
    everything = [v for pts in points.values() for p in pts for v in p]
    lo, hi = min(everything) - 2, max(everything) + 2
    ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1, label="ours = paper")
    for column in [c for c in COLUMNS if c in points]:
        p = np.array(points[column])
        ax.errorbar(p[:, 0], p[:, 1], yerr=[p[:, 1] - p[:, 2], p[:, 3] - p[:, 1]], fmt="o", markersize=4,
                    capsize=2, label=column_label(column))  # fmt: skip
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("paper (MME as % of its maximum)")
    ax.set_ylabel("ours, with 95% interval")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_figures(results: StudyResults, views: list[TableView], out_dir: str | Path) -> list[Path]:
    """Write every figure the study's numbers allow; returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [
        radar(results, views, out / "radar.png"),
        heatmap(results, views, out / "heatmap.png"),
        ours_vs_paper(views, out / "ours_vs_paper.png"),
    ]
    return [p for p in written if p is not None]
