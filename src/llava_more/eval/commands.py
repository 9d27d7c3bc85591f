"""``llava-more make-benchmarks``, ``llava-more evaluate`` and ``llava-more chat``."""

from __future__ import annotations

import argparse
import json
import logging

from llava_more.config.schema import EVAL_DTYPES, BenchmarkSuite
from llava_more.device import add_device_argument, resolve_device
from llava_more.errors import UserError

logger = logging.getLogger(__name__)


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
    from llava_more.outputs import check_outputs

    check_outputs({"--model": args.model, "--include-path": args.include_path}, {"--out": args.out})
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be at least 1")
    device = resolve_device(args.device, purpose="evaluation")
    dtype = args.dtype
    if device == "cpu" and dtype not in ("auto", "float32"):
        logger.info("evaluation on the CPU computes in float32 (the suite asks %s, for GPUs)", dtype)
        dtype = "float32"
    run_lmms_eval(
        args.model, _split(args.tasks), args.include_path, args.out, args.batch_size, args.limit,
        device=device, dtype=None if dtype == "auto" else dtype, max_new_tokens=args.max_new_tokens,
    )  # fmt: skip
    with open(f"{args.out}/{SCORES_FILE}", encoding="utf-8") as f:
        print(json.dumps(json.load(f)["columns"], indent=1))
    return 0


def _chat(args: argparse.Namespace) -> int:
    import sys

    from llava_more.eval.chat import ChatSession, chat_loop, check_decoding, load_chat_model, load_image

    check_decoding(args.max_new_tokens, args.temperature)
    image = load_image(args.image)  # before the (slow) model load, so a typo fails at once
    quantization = "8bit" if args.load_in_8bit else "4bit" if args.load_in_4bit else None
    chat_model = load_chat_model(args.model, device=args.device, dtype=args.dtype, quantization=quantization)
    session = ChatSession(chat_model, image, max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    if args.query is not None:
        session.ask(args.query, sys.stdout)
    else:
        chat_loop(session, sys.stdin, sys.stdout, sys.stderr)
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
    p.add_argument(
        "--batch-size",
        type=int,
        default=BenchmarkSuite.batch_size,
        help="questions per generate call (answers do not change)",
    )
    p.add_argument("--limit", type=float, default=None, help="documents per task (lmms-eval --limit)")
    add_device_argument(p)
    p.add_argument(
        "--dtype",
        default="auto",
        choices=EVAL_DTYPES,
        help="weights and compute on a GPU (auto: the bundle's saved dtype); the CPU uses float32",
    )
    p.add_argument("--max-new-tokens", type=int, default=None, help="cap on generated tokens per answer")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser(
        "chat", help="ask a model about an image, once (--query) or interactively; answers stream"
    )
    p.add_argument("--model", required=True, help="model bundle folder, Hugging Face model folder or Hub id")
    p.add_argument("--image", required=True, help="image file the conversation is about")
    p.add_argument("--query", default=None, help="answer this one question and exit (default: interactive)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="cap on generated tokens per answer")
    p.add_argument("--temperature", type=float, default=0.0, help="0 decodes greedily; above 0 samples")
    add_device_argument(p)
    p.add_argument("--dtype", default="auto", help="auto (the saved dtype), float32, bfloat16 or float16")
    quantized = p.add_mutually_exclusive_group()
    quantized.add_argument(
        "--load-in-8bit", action="store_true", help="bitsandbytes 8-bit weights (GPU only)"
    )
    quantized.add_argument(
        "--load-in-4bit", action="store_true", help="bitsandbytes 4-bit weights (GPU only)"
    )
    p.set_defaults(func=_chat)
