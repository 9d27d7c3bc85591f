"""``llava-more make-tokenizer``: train the demo tokenizer on the text of LLaVA JSON files."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-tokenizer",
        help="train the demo byte-level BPE tokenizer on LLaVA JSON files",
        description="Train a byte-level BPE on the human/gpt turns and captions of LLaVA .json/.jsonl files; "
        "every chat template's special tokens, <image> and <pad> are single tokens.",
    )
    parser.add_argument(
        "--texts",
        nargs="+",
        required=True,
        type=Path,
        metavar="FILE.json",
        help="LLaVA .json or .jsonl dataset files whose text is the corpus",
    )
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="folder the tokenizer is saved to"
    )
    parser.add_argument(
        "--vocab-size", required=True, type=int, metavar="N", help="vocabulary size (upper bound)"
    )
    parser.set_defaults(func=make_tokenizer)


def make_tokenizer(args: argparse.Namespace) -> int:
    # Imported here: the tokenizer stack pulls in torch, and every other command would pay for it.
    from llava_more.outputs import atomic_dir, check_outputs
    from llava_more.text.corpus import read_corpus
    from llava_more.text.tokenizer import train_demo_tokenizer

    check_outputs({"--texts": args.texts}, {"--out": args.out})
    texts = read_corpus(args.texts)
    with atomic_dir(args.out, signature="tokenizer.json") as staging:
        tokenizer = train_demo_tokenizer(texts, staging, args.vocab_size)
    logger.info("trained a %d-token tokenizer on %d texts into %s", len(tokenizer), len(texts), args.out)
    return 0
