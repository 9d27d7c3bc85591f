"""``llava-more dvc-yaml``: write dvc.yaml for a study from the Snakemake DAG."""

from __future__ import annotations

import argparse
from pathlib import Path


def _dvc_yaml(args: argparse.Namespace) -> int:
    from llava_more.config import load_params
    from llava_more.pipeline.dvc import render_dvc_yaml

    params = load_params(args.params)
    study = params.study(args.study).name
    text = render_dvc_yaml(study, params)
    if args.out == "-":
        print(text, end="")
    else:
        Path(args.out).write_text(text)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dvc-yaml", help="generate dvc.yaml for a study from the Snakemake DAG")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--study", default=None, help="study name (default: params.yaml's `study`)")
    p.add_argument("--out", default="dvc.yaml", help="file to write, or - for standard output")
    p.set_defaults(func=_dvc_yaml)
