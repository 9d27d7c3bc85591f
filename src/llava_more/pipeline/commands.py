"""``llava-more dvc-yaml`` (dvc.yaml from the Snakemake DAG), ``dvc-stages`` (one study's stages in it) and
``llava-more plan`` (a study's cost and state)."""

from __future__ import annotations

import argparse
from pathlib import Path

from llava_more.device import add_device_argument, decide_device, gpus_given
from llava_more.pipeline.cost import GPUS, Assumptions


def _dvc_yaml(args: argparse.Namespace) -> int:
    from llava_more.config import load_params
    from llava_more.outputs import check_outputs, write_text_atomic
    from llava_more.pipeline.dvc import render_dvc_yaml

    check_outputs({"--params": args.params}, {"--out": args.out})
    params = load_params(args.params)
    studies = [params.study(name).name for name in args.study] if args.study else None
    text = render_dvc_yaml(params, studies)
    if args.out == "-":
        print(text, end="")
    else:
        write_text_atomic(args.out, text)
    return 0


def _dvc_stages(args: argparse.Namespace) -> int:
    from llava_more.config import load_params
    from llava_more.pipeline.dvc import study_stages

    study = load_params(args.params).study(args.study).name
    print("\n".join(study_stages(study)))
    return 0


def _pull(args: argparse.Namespace) -> int:
    from llava_more.config import load_params
    from llava_more.pipeline.dvc import pull_study

    study = load_params(args.params).study(args.study).name
    written = pull_study(study)
    print(f"{study}: {len(written)} output(s) pulled and marked current for Snakemake")
    return 0


def _device(args: argparse.Namespace) -> int:
    import json
    import os

    choice = decide_device(args.device, purpose=args.purpose)
    print(
        json.dumps({"device": choice.device, "reason": choice.reason, "gpus_given": gpus_given(os.environ)})
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "device", help="the device this job's model commands would use, and why (what the scheduler gave it)"
    )
    add_device_argument(p)
    p.add_argument("--purpose", default="this job", help="what the job is, for the message")
    p.set_defaults(func=_device)
    p = sub.add_parser("dvc-yaml", help="generate dvc.yaml (every study's stages) from the Snakemake DAG")
    p.add_argument("--params", default="params.yaml")
    p.add_argument(
        "--study", action="append", default=None, help="only this study (repeatable; default: every study)"
    )
    p.add_argument("--out", default="dvc.yaml", help="file to write, or - for standard output")
    p.set_defaults(func=_dvc_yaml)
    p = sub.add_parser(
        "pull",
        help="dvc pull one study's artifacts, then mark them current for Snakemake (snakemake --touch)",
    )
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--study", default=None, help="study name (default: params.yaml's `study`)")
    p.set_defaults(func=_pull)
    p = sub.add_parser("dvc-stages", help="the names of one study's stages in dvc.yaml (targets for dvc)")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--study", default=None, help="study name (default: params.yaml's `study`)")
    p.set_defaults(func=_dvc_stages)
    register_plan(sub)


def _plan(args: argparse.Namespace) -> int:
    import json

    from llava_more.config import load_params
    from llava_more.pipeline.plan import plan_study
    from llava_more.pipeline.plan_table import render_table

    assumptions = Assumptions(
        gpu=args.gpu,
        mfu=args.mfu,
        throughput=args.throughput,
        stage1_text_tokens=args.stage1_text_tokens,
        stage2_text_tokens=args.stage2_text_tokens,
        eval_sample_seconds=args.eval_sample_seconds,
    )
    params = load_params(args.params)
    plan = plan_study(params, args.study, Path(args.params).resolve().parent, assumptions, not args.no_remote)
    print(
        json.dumps(plan.to_dict(), indent=1) if args.json else render_table(plan),
        end="\n" if args.json else "",
    )
    return 0


def register_plan(sub: argparse._SubParsersAction) -> None:
    d = Assumptions()
    p = sub.add_parser(
        "plan",
        help="a study's jobs, estimated GPU-hours per stage, and what is already built",
        description="List the study's jobs (from the Snakemake DAG) with estimated GPU-hours: training from model "
        "FLOPs (stage 1: 4 x LLM params per token, frozen LLM backward; stage 2: 6 x; projector 6 x and frozen "
        "encoder 2 x params per image token, x14 encoder passes with S2) over peak bf16 FLOP/s x MFU, or a "
        "measured throughput; evaluation from benchmark sample counts. All are estimates. 'local' means the "
        "outputs exist here; 'remote' that the DVC remote holds the version in dvc.lock.",
    )
    p.add_argument("--params", default="params.yaml", help="params.yaml of the checkout to plan")
    p.add_argument("--study", default=None, help="study name (default: params.yaml's `study`)")
    p.add_argument(
        "--gpu", choices=sorted(GPUS), default=d.gpu, help=f"GPU type for peak FLOP/s (default {d.gpu})"
    )
    p.add_argument(
        "--mfu", type=float, default=d.mfu, help=f"assumed model FLOPs utilisation (default {d.mfu})"
    )
    p.add_argument(
        "--throughput",
        type=float,
        default=None,
        metavar="TOKENS_PER_S_PER_GPU",
        help="measured training throughput; replaces the FLOPs estimate (same rate for every model)",
    )
    p.add_argument(
        "--stage1-text-tokens",
        type=float,
        default=d.stage1_text_tokens,
        help=f"assumed mean text tokens per stage-1 sample, besides image tokens (default {d.stage1_text_tokens:g})",
    )
    p.add_argument(
        "--stage2-text-tokens",
        type=float,
        default=d.stage2_text_tokens,
        help=f"assumed mean text tokens per stage-2 sample, besides image tokens (default {d.stage2_text_tokens:g})",
    )
    p.add_argument(
        "--eval-sample-seconds",
        type=float,
        default=d.eval_sample_seconds,
        help=f"A100-seconds per benchmark sample for a 7B model (default {d.eval_sample_seconds:g})",
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--no-remote", action="store_true", help="do not ask the DVC remote (only local outputs)")
    p.set_defaults(func=_plan)
