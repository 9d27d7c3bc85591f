"""``llava-more report``: a study's tables (Markdown, CSV, LaTeX) and per-benchmark plots.

Scores are read from ``<scores-dir>/stage2/<experiment>/scores.json`` (and ``stage1/...`` for
studies with ``eval_untrained``), the layout of ``llava_more.paths.scores``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llava_more.report.tables import ExperimentScores, load_scores


def collect_scores(scores_dir: str | Path, experiments: list, stages: tuple[int, ...] = (2,)) -> list[ExperimentScores]:
    """Scores of every experiment (``config.Experiment``) at every stage; missing files are errors."""
    rows = []
    for stage in stages:
        for exp in experiments:
            path = Path(scores_dir) / f"stage{stage}" / exp.id / "scores.json"
            rows.append(load_scores(path, exp.id, stage=stage, llm=exp.llm, vision=exp.vision, s2=exp.s2, pretrain=exp.pretrain))
    return rows


def _report(args: argparse.Namespace) -> int:
    from llava_more.config import load_params
    from llava_more.report.plots import plot_benchmarks
    from llava_more.report.tables import build_tables

    study = load_params(args.params).study(args.study)
    stages = (2, 1) if study.eval_untrained else (2,)
    rows = collect_scores(args.scores_dir, list(study.experiments), stages)
    tables = {name: list(ids) for name, ids in study.tables.items()}
    written = build_tables(rows, tables, args.out, args.reference)
    plots = plot_benchmarks(rows, args.plots, args.reference) if args.plots else []
    summary = {name: {kind: str(path) for kind, path in paths.items()} for name, paths in written.items()}
    print(json.dumps({"tables": summary, "plots": [str(p) for p in plots]}, indent=1))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write a study's result tables and plots from its scores")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--study", default=None, help="study name (default: params.yaml's `study`)")
    p.add_argument("--scores-dir", required=True, help="results/<study>/eval (holds stage2/<experiment>/scores.json)")
    p.add_argument("--out", required=True, help="folder for <table>.md/.csv/.tex")
    p.add_argument("--plots", default=None, help="folder for per-benchmark bar charts (PNG)")
    p.add_argument("--reference", default=None, help="paper_results.csv: adds paper and delta values where rows match")
    p.set_defaults(func=_report)
