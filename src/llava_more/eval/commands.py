"""``llava-more make-benchmarks`` and ``llava-more evaluate``."""

from __future__ import annotations

import argparse
import json

from llava_more.errors import UserError


def _split(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise UserError(f"--tasks {value!r}: give one or more comma-separated names")
    return items


def _make_benchmarks(args: argparse.Namespace) -> int:
    from llava_more.eval.demo_tasks import generate_demo_benchmarks

    folders = generate_demo_benchmarks(
        args.out, args.n, args.seed, _split(args.tasks) if args.tasks else None
    )
    print(json.dumps({task: str(path) for task, path in folders.items()}, indent=1))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from llava_more.eval.run import SCORES_FILE, run_lmms_eval

    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be at least 1")
    run_lmms_eval(
        args.model, _split(args.tasks), args.include_path, args.out, args.batch_size, args.limit,
        device=args.device, max_new_tokens=args.max_new_tokens,
    )  # fmt: skip
    with open(f"{args.out}/{SCORES_FILE}", encoding="utf-8") as f:
        print(json.dumps(json.load(f)["columns"], indent=1))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-benchmarks", help="write the demo benchmarks as local lmms-eval tasks")
    p.add_argument("--out", required=True, help="folder to write (pass it to evaluate --include-path)")
    p.add_argument("--n", type=int, required=True, help="documents per task")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--tasks", default=None, help="comma-separated demo tasks (default: all)")
    p.set_defaults(func=_make_benchmarks)

    p = sub.add_parser("evaluate", help="run lmms-eval on a model bundle and write scores.json")
    p.add_argument("--model", required=True, help="model bundle folder")
    p.add_argument(
        "--tasks", required=True, help="comma-separated benchmark names (params.yaml benchmark_suites)"
    )
    p.add_argument("--include-path", default=None, help="folder of local lmms-eval tasks (demo benchmarks)")
    p.add_argument("--out", required=True, help="folder for scores.json, lmms-eval's output and log")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--limit", type=float, default=None, help="documents per task (lmms-eval --limit)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-new-tokens", type=int, default=None, help="cap on generated tokens per answer")
    p.set_defaults(func=_evaluate)
