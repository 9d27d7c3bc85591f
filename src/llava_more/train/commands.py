"""``llava-more train``: run one training stage with a protocol from ``params.yaml``.

The same command is what the workflow runs on a laptop, on one GPU node and on several SLURM nodes;
``launch.plan_launch`` decides whether this process trains or starts ``torchrun`` (under ``srun``)
running this very command in every worker.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from llava_more.errors import ConfigError, TrainingInterrupted
from llava_more.train.signals import (
    AGAIN_TO_ABORT,
    PASSED_ON,
    STOP_FILE,
    STOP_FILE_ENV,
    STOP_SIGNALS,
    die_of_sigint,
    stop_on_signals,
)

if TYPE_CHECKING:
    from llava_more.train.config import TrainConfig
    from llava_more.train.launch import LaunchPlan

logger = logging.getLogger(__name__)

# ``llava_more.model.bundle.META_FILE``, named here so that the launching process need not import transformers.
BUNDLE_META_FILE = "llava_more.json"


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


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it (torchrun's workers run in sessions of their own)."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def run_workers(command: list[str], stop_file: Path, *, clear: bool) -> int:
    """Run the launch command (torchrun, or srun over several nodes) and hand stop requests to its workers.

    The command runs in a session of its own with the stop signals ignored, so that neither a
    terminal's Ctrl-C nor SLURM's signal to every process of the job reaches it: torchrun would pass
    each on a second time (and abandon its workers, with a traceback, when one arrives while it
    shuts them down). This process takes them instead. The first writes ``stop_file``, which the
    workers read at their next step end (they save a checkpoint and stop; ``STOP_FILE_ENV`` tells them
    where it is); a second SIGINT kills every worker at once and ends this process as killed by
    SIGINT. SIGHUP and SIGQUIT go on to the command, which ends its workers. ``clear`` removes the
    stop file of an earlier run first (the job's outermost launcher does; srun's per-node ones not).
    """
    if clear:
        stop_file.unlink(missing_ok=True)
    env = {**os.environ, STOP_FILE_ENV: str(stop_file)}
    # Ignored signals stay ignored across exec: set so around the start of the child only.
    inherited = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        child = subprocess.Popen(command, env=env, start_new_session=True)
    finally:
        for sig, handler in inherited.items():
            signal.signal(sig, handler)

    def on_stop(signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        if not stop_file.exists():
            stop_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = stop_file.with_name(f".{stop_file.name}.{os.getpid()}")
            tmp.write_text(f"{name}\n")
            os.replace(tmp, stop_file)
            hint = f" ({AGAIN_TO_ABORT})" if signum == signal.SIGINT else ""
            logger.warning(
                "%s received: the workers save a checkpoint at their next step, then stop%s", name, hint
            )
        elif signum == signal.SIGINT:
            logger.warning("%s again: stopping the workers now, without a checkpoint", name)
            _kill_tree(child.pid)  # not child.wait(): the interrupted wait below holds its lock
            die_of_sigint()

    handlers = {sig: on_stop for sig in STOP_SIGNALS}
    handlers.update({sig: lambda signum, _frame: child.send_signal(signum) for sig in PASSED_ON})
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _train(args: argparse.Namespace) -> int:
    from llava_more.device import resolve_device
    from llava_more.outputs import check_outputs, check_replaceable
    from llava_more.train.checkpoints import fingerprint, reuse_finished
    from llava_more.train.launch import is_launched
    from llava_more.train.work_lock import exclusive_work_dir

    check_outputs(
        {"--init": args.init, "--data": args.data, "--image-root": args.image_root, "--params": args.params},
        {"--out": args.out, "--work-dir": args.work_dir},
    )
    check_replaceable(args.out, BUNDLE_META_FILE)  # now, not after hours of training
    cfg = load_config(args)
    if is_launched(os.environ):  # a torchrun worker or one node's task: the outermost process holds the lock
        return _run_stage(args, cfg, _plan(args, cfg), outermost=False)
    with exclusive_work_dir(args.work_dir) as waited:
        if waited and Path(args.out).exists():
            logger.info("%s was written by the run this one waited for; nothing left to do", args.out)
            return 0
        # Before anything heavy starts: a rerun of a finished run takes seconds.
        expected = fingerprint(args.stage, cfg, Path(args.data), Path(args.init))
        if reuse_finished(Path(args.work_dir), Path(args.out), expected):
            return 0
        # A job given GPUs that torch cannot use stops here, before any worker starts.
        resolve_device(purpose=f"stage-{args.stage} training")
        return _run_stage(args, cfg, _plan(args, cfg), outermost=True)


def _plan(args: argparse.Namespace, cfg: TrainConfig) -> LaunchPlan:
    from llava_more.train.launch import plan_launch, visible_accelerators

    return plan_launch(
        worker_argv(args),
        os.environ,
        local_devices=visible_accelerators(),
        needs_process_group=cfg.deepspeed != "none",
        nproc_per_node=args.nproc_per_node,
    )


def _run_stage(args: argparse.Namespace, cfg: TrainConfig, plan: LaunchPlan, *, outermost: bool) -> int:
    if plan.command is None:  # this process trains: alone, or as one of torchrun's workers
        # Handlers first (the imports below take seconds): a stop asked for meanwhile is kept.
        with stop_on_signals():
            from llava_more.train.trainer import train_stage

            try:
                train_stage(args.stage, args.init, args.data, args.image_root, args.out, args.work_dir, cfg)
            except TrainingInterrupted:
                if plan.mode != "worker" or STOP_FILE_ENV not in os.environ:
                    raise
                # The launcher reports the stop (exit 75); torchrun would call a non-zero exit a failure.
                return 0
        return 0

    from llava_more.train.checkpoints import INTERRUPTED_MARKER

    work_dir = Path(args.work_dir)
    logger.info("launching %s: %s", plan.description, " ".join(plan.command))
    marker = work_dir / INTERRUPTED_MARKER
    if outermost:
        marker.unlink(missing_ok=True)  # only a stop of *these* workers may turn into exit 75
    returncode = run_workers(plan.command, work_dir / STOP_FILE, clear=outermost)
    if marker.is_file():
        if not outermost:
            return 0  # srun's per-node task: the job's outermost launcher reports the stop
        raise TrainingInterrupted(
            f"stopped on {marker.read_text().strip()}; checkpoint saved in {work_dir}, the next start resumes from it"
        )
    return returncode


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train one LLaVA stage (resumable; exit 75 after a SIGTERM/SIGUSR1/SIGINT checkpoint)"
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
