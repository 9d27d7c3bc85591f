"""The ``llava-more`` console script.

Every pipeline step is a sub-command. Each command module exposes ``register(subparsers)`` which
adds its parsers and sets ``func`` on them; this file only wires them together and turns
``UserError`` into a one-line message with exit code 2.

Command modules import torch, transformers and lmms-eval inside their handlers, never at the top,
so that listing the commands and the light ones (``check-params``, the Snakefile's dry runs) start
fast.
"""

from __future__ import annotations

import argparse
import logging
import sys

from llava_more.config import commands as config_commands
from llava_more.data import commands as data_commands
from llava_more.data.download import commands as download_commands
from llava_more.errors import TrainingInterrupted, UserError
from llava_more.eval import commands as eval_commands
from llava_more.model import commands as model_commands
from llava_more.pipeline import commands as pipeline_commands
from llava_more.report import commands as report_commands
from llava_more.text import commands as text_commands
from llava_more.train import commands as train_commands

# Modules that contribute sub-commands, in the order they appear in ``--help``.
COMMAND_MODULES = (
    config_commands,
    text_commands,
    data_commands,
    model_commands,
    train_commands,
    eval_commands,
    report_commands,
    download_commands,
    pipeline_commands,
)

# Exit code that tells SLURM / Snakemake the job stopped cleanly on a signal and should be requeued.
REQUEUE_EXIT_CODE = 75  # EX_TEMPFAIL


def one_line(exc: UserError) -> str:
    """The error's message on one line.

    An error raised in a torch DataLoader worker (a bad image met in training) comes back re-raised
    with the worker's traceback in its message; its last line holds the original message.
    """
    text = str(exc)
    if "Traceback (most recent call last)" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llava-more", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result = args.func(args)
    except UserError as exc:
        print(f"llava-more {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except TrainingInterrupted as exc:
        print(
            f"llava-more {args.command}: {exc}; exit {REQUEUE_EXIT_CODE} so the job is requeued",
            file=sys.stderr,
        )
        return REQUEUE_EXIT_CODE
    except KeyboardInterrupt:  # Ctrl-C where a command does not handle it itself (training does)
        print(f"llava-more {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
