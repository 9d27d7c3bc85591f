"""``llava-more report``: a study's tables (Markdown, CSV, LaTeX) and per-benchmark plots.

Scores are read from ``<scores-dir>/stage2/<experiment>/scores.json`` (and ``stage1/...`` for
studies with ``eval_untrained``), the layout of ``llava_more.paths.scores``. A published study with
a reference CSV also gets its calibration view (``report/calibration.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

from llava_more.outputs import atomic_dir, check_outputs
from llava_more.report.tables import ExperimentScores, load_scores


def collect_scores(scores_dir: str | Path, study) -> list[ExperimentScores]:
    """Every experiment's stage-2 scores, and stage-1 scores for the study's ``eval_untrained``
    experiments (``config.Study``); a missing file is an error naming it."""
    wanted = [(2, exp) for exp in study.experiments]
    wanted += [(1, study.experiment(exp_id)) for exp_id in study.eval_untrained]
    return [
        load_scores(
            Path(scores_dir) / f"stage{stage}" / exp.id / "scores.json",
            exp.id,
            stage=stage,
            llm=exp.llm,
            vision=exp.vision,
            s2=exp.s2,
            pretrain=exp.pretrain,
        )
        for stage, exp in wanted
    ]


def _report(args: argparse.Namespace) -> int:
    from llava_more.config import load_params
    from llava_more.report.plots import plot_benchmarks
    from llava_more.report.tables import build_tables

    check_outputs(
        {"--params": args.params, "--scores-dir": args.scores_dir, "--reference": args.reference},
        {"--out": args.out, "--plots": args.plots},
    )
    study = load_params(args.params).study(args.study)
    rows = collect_scores(args.scores_dir, study)
    tables = {name: list(ids) for name, ids in study.tables.items()}
    # Tables and plots are made in staging folders and moved into place together at the end.
    with contextlib.ExitStack() as stack:
        tables_dir = stack.enter_context(atomic_dir(args.out))
        written = build_tables(rows, tables, tables_dir, args.reference)
        if study.published and args.reference:
            from llava_more.report.calibration import build_calibration

            written["calibration"] = build_calibration(rows, args.reference, tables_dir)
        plots_dir = stack.enter_context(atomic_dir(args.plots)) if args.plots else None
        plots = plot_benchmarks(rows, plots_dir, args.reference) if plots_dir else []
        summary = {
            name: {
                kind: str(Path(args.out) / Path(path).relative_to(tables_dir)) for kind, path in paths.items()
            }
            for name, paths in written.items()
        }
        plots = [Path(args.plots) / Path(p).relative_to(plots_dir) for p in plots] if plots_dir else []
    print(json.dumps({"tables": summary, "plots": [str(p) for p in plots]}, indent=1))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write a study's result tables and plots from its scores")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--study", default=None, help="study name (default: params.yaml's `study`)")
    p.add_argument(
        "--scores-dir", required=True, help="results/<study>/eval (holds stage2/<experiment>/scores.json)"
    )
    p.add_argument("--out", required=True, help="folder for <table>.md/.csv/.tex")
    p.add_argument("--plots", default=None, help="folder for per-benchmark bar charts (PNG)")
    p.add_argument(
        "--reference", default=None, help="paper_results.csv: adds paper and delta values where rows match"
    )
    p.set_defaults(func=_report)
