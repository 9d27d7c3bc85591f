"""``llava-more check-params``: validate params.yaml and show what a study will run."""

from __future__ import annotations

import argparse
import json

from llava_more.config.schema import check_benchmarks_installed, load_params


def _check(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    study = params.study(args.study)
    check_benchmarks_installed(params)
    summary = {
        "study": study.name,
        "size": study.size,
        "protocol": study.protocol,
        "experiments": [e.id for e in study.experiments],
        "initial_models": list(study.pairs),
        "pretrain_sets": list(study.pretrain_sets),
        "benchmarks": list(study.benchmarks),
        "tables": {name: list(rows) for name, rows in study.tables.items()},
    }
    if study.published:  # what is imported instead of trained
        summary["kind"] = study.kind
        summary["checkpoints"] = {e.id: e.checkpoint for e in study.experiments}
        summary["stage1_checkpoints"] = {
            e.id: e.stage1_checkpoint for e in study.experiments if e.stage1_checkpoint
        }
        for key in ("protocol", "initial_models", "pretrain_sets"):
            del summary[key]
    print(json.dumps(summary, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check-params",
        help="validate params.yaml (every key, name, recipe and benchmark) and list a study's experiments",
    )
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--study", default=None, help="study name (default: params.yaml's `study`)")
    p.set_defaults(func=_check)
