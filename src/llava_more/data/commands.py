"""CLI for the data layer: ``make-demo-data pretrain|instruct`` and ``validate-data``."""

from __future__ import annotations

import argparse
import json

from llava_more.data.demo_instruct import DEFAULT_MAX_TURNS
from llava_more.data.demo_pretrain import PRETRAIN_KINDS


def _make_pretrain(args: argparse.Namespace) -> int:
    from llava_more.data.demo_pretrain import generate_demo_pretrain

    dataset = generate_demo_pretrain(args.out, args.kind, args.size, args.seed)
    print(json.dumps(dataset.manifest, indent=1))
    return 0


def _mix(text: str) -> dict[str, float]:
    try:
        return {k.strip(): float(v) for k, v in (item.split("=") for item in text.split(",") if item.strip())}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected kind=share,kind=share..., got {text!r}") from None


def _make_instruct(args: argparse.Namespace) -> int:
    from llava_more.data.demo_instruct import generate_demo_instruct

    dataset = generate_demo_instruct(args.out, args.size, args.seed, mix=args.mix, max_turns=args.max_turns)
    print(json.dumps(dataset.manifest, indent=1))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from llava_more.data.validate import validate_dataset

    report = validate_dataset(
        args.json,
        args.image_root,
        args.quarantine,
        args.max_bad_fraction,
        clean_path=args.clean_out,
        report_path=args.report,
        workers=args.workers,
    )
    print(json.dumps(report.to_dict(), indent=1))
    return 0


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    make = sub.add_parser("make-demo-data", help="generate a demo dataset from the demo world (LLaVA layout)")
    kinds = make.add_subparsers(dest="dataset", required=True, metavar="DATASET")

    pretrain = kinds.add_parser(
        "pretrain", help="stage-1 image-caption pairs (data.json + images/ + manifest.json)"
    )
    pretrain.add_argument("--kind", required=True, choices=PRETRAIN_KINDS, help="caption style")
    pretrain.add_argument("--size", required=True, type=_positive, help="number of records")
    pretrain.add_argument("--seed", required=True, type=int)
    pretrain.add_argument("--out", required=True, help="output folder")
    pretrain.set_defaults(func=_make_pretrain)

    instruct = kinds.add_parser("instruct", help="stage-2 conversations, LLaVA-665K style")
    instruct.add_argument("--size", required=True, type=_positive, help="number of records")
    instruct.add_argument("--seed", required=True, type=int)
    instruct.add_argument("--out", required=True, help="output folder")
    instruct.add_argument(
        "--mix", type=_mix, default=None, help="share of each conversation kind, e.g. short=0.5,existence=0.5"
    )
    instruct.add_argument(
        "--max-turns", type=_positive, default=DEFAULT_MAX_TURNS, help="most question-answer turns per image"
    )
    instruct.set_defaults(func=_make_instruct)

    validate = sub.add_parser(
        "validate-data",
        help="check a LLaVA .json/.jsonl dataset; quarantine bad records, write the clean rest",
    )
    validate.add_argument("--json", required=True, help="dataset file (.json array or .jsonl)")
    validate.add_argument(
        "--image-root", required=True, help="folder the records' image paths are relative to"
    )
    validate.add_argument(
        "--quarantine", required=True, help="JSON Lines file receiving each bad record and why"
    )
    validate.add_argument(
        "--max-bad-fraction", required=True, type=_fraction, help="fail above this fraction"
    )
    validate.add_argument(
        "--clean-out", default=None, help="clean records (default: <quarantine dir>/<name>.clean.json)"
    )
    validate.add_argument("--report", default=None, help="also write the report as JSON here")
    validate.add_argument("--workers", default=None, type=_positive, help="image-decoding threads")
    validate.set_defaults(func=_validate)
