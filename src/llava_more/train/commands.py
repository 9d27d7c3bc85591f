"""``llava-more train``: run one training stage with a protocol from ``params.yaml``.

The same command is what the workflow runs on a laptop, on one GPU node and on several SLURM nodes;
``launch.plan_launch`` decides whether this process trains or starts ``torchrun`` (under ``srun``)
running this very command in every worker.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from llava_more.errors import ConfigError, TrainingInterrupted

if TYPE_CHECKING:
    from llava_more.train.config import TrainConfig
    from llava_more.train.launch import LaunchPlan

logger = logging.getLogger("llava_more.train")


def load_config(args: argparse.Namespace):
    from llava_more.config import load_params
    from llava_more.train.config import TrainConfig

    params = load_params(args.params, check_backbones=False)
    if args.protocol not in params.protocols:
        raise ConfigError(
            f"{args.params}: protocol {args.protocol!r} is not defined; protocols: {', '.join(params.protocols)}"
        )
    return TrainConfig.from_protocol(
        params.protocols[args.protocol].stage(args.stage),
        seed=args.seed,
        max_steps=args.max_steps,
        num_workers=args.num_workers,
        lora_r=args.lora_r,
    )


def worker_argv(args: argparse.Namespace) -> list[str]:
    """This command's arguments, to run it again inside each launched process."""
    argv = [
        "train", "--stage", str(args.stage), "--init", args.init, "--data", args.data,
        "--image-root", args.image_root, "--out", args.out, "--work-dir", args.work_dir,
        "--params", args.params, "--protocol", args.protocol,
    ]  # fmt: skip
    for flag, value in (
        ("--max-steps", args.max_steps),
        ("--seed", args.seed),
        ("--num-workers", args.num_workers),
        ("--lora-r", args.lora_r),
        ("--nproc-per-node", args.nproc_per_node),
    ):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def run_forwarding_signals(command: list[str]) -> int:
    """Run ``command``; SLURM's signals to this process go on to it (it checkpoints, we wait)."""
    child = subprocess.Popen(command)
    forwarded = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: child.send_signal(signum)) for sig in forwarded
    }
    try:
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _train(args: argparse.Namespace) -> int:
    import os

    from llava_more.device import resolve_device
    from llava_more.train.launch import plan_launch, visible_accelerators
    from llava_more.train.work_lock import exclusive_work_dir

    cfg = load_config(args)
    resolve_device(purpose=f"stage-{args.stage} training", log="RANK" not in os.environ)
    plan = plan_launch(
        worker_argv(args),
        os.environ,
        local_devices=visible_accelerators(),
        needs_process_group=cfg.deepspeed != "none",
        nproc_per_node=args.nproc_per_node,
    )
    if plan.mode == "worker" or (plan.mode == "torchrun" and plan.nnodes > 1):
        # started by torchrun, or one node's torchrun under srun: the job's outermost process holds the lock
        return _run_stage(args, cfg, plan)
    with exclusive_work_dir(args.work_dir) as waited:
        if waited and Path(args.out).exists():
            logger.info("%s was written by the run this one waited for; nothing left to do", args.out)
            return 0
        return _run_stage(args, cfg, plan)


def _run_stage(args: argparse.Namespace, cfg: TrainConfig, plan: LaunchPlan) -> int:
    from llava_more.train.trainer import INTERRUPTED_MARKER, train_stage

    if plan.command is None:
        train_stage(args.stage, args.init, args.data, args.image_root, args.out, args.work_dir, cfg)
        return 0
    logger.info("launching %s: %s", plan.description, " ".join(plan.command))
    marker = Path(args.work_dir) / INTERRUPTED_MARKER
    marker.unlink(missing_ok=True)  # only a stop of *these* workers may turn into exit 75
    returncode = run_forwarding_signals(plan.command)
    if marker.is_file():
        raise TrainingInterrupted(f"workers stopped on a signal ({marker.read_text().strip()})")
    return returncode


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train one LLaVA stage (resumable; exit 75 after a SIGTERM/SIGUSR1 checkpoint)"
    )
    p.add_argument("--stage", type=int, choices=(1, 2), required=True)
    p.add_argument("--init", required=True, help="model bundle to start from (init model, or stage-1 output)")
    p.add_argument("--data", required=True, help="LLaVA JSON / JSONL training data")
    p.add_argument("--image-root", required=True, help="folder the records' image paths are relative to")
    p.add_argument(
        "--out", required=True, help="where the trained bundle is written (atomically, at the end)"
    )
    p.add_argument("--work-dir", required=True, help="resumable checkpoints, logs and TensorBoard events")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--protocol", required=True, help="a key of params.yaml's `protocols`")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps (smoke runs)")
    p.add_argument("--seed", type=int, default=None, help="training seed (default 0)")
    p.add_argument("--num-workers", type=int, default=None, help="data-loader worker processes (default 0)")
    p.add_argument("--lora-r", type=int, default=None, help="stage 2: LoRA rank instead of full LLM training")
    p.add_argument(
        "--nproc-per-node", type=int, default=None, help="processes per node (default: one per visible GPU)"
    )
    p.set_defaults(func=_train)

    w = sub.add_parser(
        "warm-vision",
        help="tiny studies: warm up a tiny vision encoder on the demo world (stands in for pretraining)",
    )
    w.add_argument("--vision", required=True, help="vision encoder id (its tiny twin is trained)")
    w.add_argument("--out", required=True, help="folder for the encoder (Hugging Face format)")
    w.add_argument("--steps", type=int, default=300)
    w.add_argument("--batch-size", type=int, default=64)
    w.add_argument("--lr", type=float, default=2e-3)
    w.add_argument("--seed", type=int, default=0)
    w.set_defaults(func=_warm_vision)


def _warm_vision(args: argparse.Namespace) -> int:
    import json

    from llava_more.train.vision_warmup import warm_up_vision

    report = warm_up_vision(
        args.vision, args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed
    )
    print(json.dumps(report))
    return 0
