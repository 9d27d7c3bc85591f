"""``llava-more report``: a study's tables (Markdown, CSV, LaTeX), findings, figures and report.html.

Scores are read from ``<scores-dir>/stage2/<experiment>/scores.json`` (and ``stage1/...`` for
studies with ``eval_untrained``), the layout of ``llava_more.paths.scores``. A published study with
a reference CSV also gets its calibration view (``report/calibration.py``). The last lines printed
say where each product is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llava_more.outputs import check_outputs
from llava_more.report.bootstrap import DEFAULT_REPLICATES, MIN_REPLICATES


def _report(args: argparse.Namespace) -> int:
    from llava_more.config import load_params
    from llava_more.errors import UserError
    from llava_more.report.build import write_report

    if not args.reference_only and not args.scores_dir:
        raise UserError("report: --scores-dir is required (or --reference-only with --reference)")
    if args.bootstrap < MIN_REPLICATES:
        raise UserError(
            f"report: --bootstrap {args.bootstrap}: a 95% interval needs at least {MIN_REPLICATES} replicates"
        )
    findings_json = str(Path(args.findings).with_suffix(".json")) if args.findings else None
    check_outputs(
        {"--params": args.params, "--scores-dir": args.scores_dir, "--reference": args.reference},
        {
            "--out": args.out,
            "--plots": args.plots,
            "--findings": [args.findings, findings_json],
            "--html": args.html,
        },
    )

    study = load_params(args.params).study(args.study)
    paths = write_report(
        study,
        None if args.reference_only else args.scores_dir,
        args.out,
        reference_csv=args.reference,
        figures_dir=args.plots,
        findings_path=args.findings,
        html_path=args.html,
        replicates=args.bootstrap,
        seed=args.bootstrap_seed,
    )
    print(json.dumps(paths.summary(), indent=1))
    print(f"Tables of study {study.name}: {args.out}/")
    if paths.findings:
        print(f"Findings: {paths.findings}")
    if paths.html:
        print(f"Report: {paths.html}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="write a study's tables, findings, figures and report.html from its scores"
    )
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--study", default=None, help="study name (default: params.yaml's `study`)")
    p.add_argument("--scores-dir", help="results/<study>/eval (holds stage2/<experiment>/scores.json)")
    p.add_argument("--out", required=True, help="folder for <table>.md/.csv/.tex")
    p.add_argument("--plots", default=None, help="folder for the figures (PNG)")
    p.add_argument(
        "--findings", default=None, help="findings.md to write (the study's claims, checked; .json beside it)"
    )
    p.add_argument(
        "--html", default=None, help="report.html to write (tables, figures and findings in one file)"
    )
    p.add_argument(
        "--reference", default=None, help="paper_results.csv: adds paper and delta values where rows match"
    )
    p.add_argument(
        "--reference-only",
        action="store_true",
        help="no scores: the study's tables with the paper's values only (needs --reference)",
    )
    p.add_argument("--bootstrap", type=int, default=DEFAULT_REPLICATES, help="bootstrap replicates per cell")
    p.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap draws")
    p.set_defaults(func=_report)
