"""How ``llava-more train`` starts its worker processes: in-process, ``torchrun``, or ``srun`` + ``torchrun``.

The workflow always runs plain ``llava-more train ...``; this module decides from the environment
what that means:

* a laptop / one device without DeepSpeed: train in this process;
* one node with several devices (or DeepSpeed, which needs a process group even on one device):
  ``torchrun --standalone --nproc-per-node G -m llava_more train ...``;
* several SLURM nodes from the batch script: ``srun`` starts one task per node running the same
  ``llava-more train`` command, and each task (which then sees its ``SLURM_NODEID``) starts
  ``torchrun --nnodes N --node-rank $SLURM_NODEID --master-addr <first host of SLURM_JOB_NODELIST>``.

Processes started by torchrun carry ``RANK`` and train directly. Stop requests (SIGTERM, SIGUSR1,
Ctrl-C) do not travel through torchrun: the launching process takes them and hands them to the
workers through a file (``commands.run_workers``). torchrun itself only ends its workers on a
hang-up or quit signal, giving them time to finish before it kills them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from llava_more.errors import UserError

# Seconds torchrun waits for its workers to end (a hang-up, a failed rank) before SIGKILL.
SHUTDOWN_GRACE_S = 900
# The signals torchrun handles itself: the stop signals reach it ignored (commands.run_workers).
TORCHRUN_SIGNALS = "SIGHUP,SIGQUIT"


@dataclass(frozen=True)
class LaunchPlan:
    """What to run: ``command`` is ``None`` when this process should train itself."""

    mode: str  # worker | single | torchrun | srun
    nnodes: int
    nproc_per_node: int
    command: list[str] | None
    description: str

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand SLURM's compressed host list (``gpu[01-03,07],login1``) like ``scontrol show hostnames``."""
    hosts: list[str] = []
    # Split on commas that are not inside brackets.
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\][^,\[]*)*", nodelist):
        match = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", part)
        if not match:
            hosts.append(part)
            continue
        prefix, ranges, suffix = match.groups()
        for item in ranges.split(","):
            if "-" in item:
                lo, hi = item.split("-", 1)
                hosts.extend(f"{prefix}{n:0{len(lo)}d}{suffix}" for n in range(int(lo), int(hi) + 1))
            else:
                hosts.append(f"{prefix}{item}{suffix}")
    if not hosts:
        raise UserError(f"SLURM_JOB_NODELIST={nodelist!r} names no host; check the job's allocation")
    return hosts


def slurm_gpus_per_node(env: Mapping[str, str]) -> int | None:
    """GPUs SLURM gave this node (``SLURM_GPUS_ON_NODE`` or ``SLURM_GPUS_PER_NODE`` like ``a100:4``)."""
    if env.get("SLURM_GPUS_ON_NODE", "").isdigit():
        return int(env["SLURM_GPUS_ON_NODE"])
    per_node = env.get("SLURM_GPUS_PER_NODE", "")
    if per_node:
        last = per_node.split("(")[0].split(":")[-1]
        if last.isdigit():
            return int(last)
    return None


def rendezvous_port(env: Mapping[str, str], base: int = 29500) -> int:
    """A port derived from the job id, so two jobs sharing a node do not collide."""
    job = env.get("SLURM_JOB_ID", "")
    return base + int(job) % 20000 if job.isdigit() else base


def slurm_nodes(env: Mapping[str, str]) -> int:
    """Nodes of this SLURM job (1 outside SLURM)."""
    if "SLURM_JOB_ID" not in env or "SLURM_JOB_NODELIST" not in env:
        return 1
    return int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1)


def is_node_task(env: Mapping[str, str]) -> bool:
    """Whether this is srun's task on one node of a multi-node job (SLURM_STEP_NUM_TASKS exists only
    inside srun)."""
    nnodes = slurm_nodes(env)
    return nnodes > 1 and env.get("SLURM_STEP_NUM_TASKS") == str(nnodes) and "SLURM_NODEID" in env


def is_launched(env: Mapping[str, str]) -> bool:
    """Whether a launch command started this process (a torchrun worker, or srun's task on a node),
    as opposed to the job's outermost ``llava-more train``."""
    return ("RANK" in env and "WORLD_SIZE" in env) or is_node_task(env)


def plan_launch(
    cli_args: Sequence[str],
    env: Mapping[str, str],
    *,
    local_devices: int,
    needs_process_group: bool,
    nproc_per_node: int | None = None,
    python: str = sys.executable,
) -> LaunchPlan:
    """Decide how to run ``llava-more <cli_args>`` (``cli_args`` starts with ``train``).

    ``local_devices`` is the number of accelerators this process can see; ``needs_process_group``
    is true with DeepSpeed; ``nproc_per_node`` overrides the device count (e.g. 2 CPU processes).
    """
    cli_args = list(cli_args)
    if "RANK" in env and "WORLD_SIZE" in env:
        world = int(env["WORLD_SIZE"])
        return LaunchPlan("worker", 1, world, None, f"worker rank {env['RANK']} of {world}")

    in_slurm = "SLURM_JOB_ID" in env and "SLURM_JOB_NODELIST" in env
    nnodes = slurm_nodes(env)
    gpus = slurm_gpus_per_node(env) if in_slurm else None
    nproc = nproc_per_node or gpus or local_devices or 1
    if nnodes == 1 and nproc == 1 and not needs_process_group:
        return LaunchPlan("single", 1, 1, None, "a single process on this machine")

    module = [python, "-m", "llava_more", *cli_args]
    torchrun = [
        python, "-m", "torch.distributed.run",
        f"--nproc-per-node={nproc}",
        f"--signals-to-handle={TORCHRUN_SIGNALS}",
        f"--shutdown-timeout={SHUTDOWN_GRACE_S}",
    ]  # fmt: skip
    if nnodes == 1:
        command = [*torchrun, "--standalone", "--nnodes=1", "-m", "llava_more", *cli_args]
        return LaunchPlan("torchrun", 1, nproc, command, f"torchrun: 1 node x {nproc} process(es)")

    # Several nodes: one task per node must exist first. SLURM_STEP_NUM_TASKS is set only inside srun.
    in_step_per_node = is_node_task(env)
    master = expand_nodelist(env["SLURM_JOB_NODELIST"])[0]
    if not in_step_per_node:
        command = [
            "srun", f"--nodes={nnodes}", f"--ntasks={nnodes}", "--ntasks-per-node=1",
            "--kill-on-bad-exit=1", *module,
        ]  # fmt: skip
        return LaunchPlan("srun", nnodes, nproc, command, f"srun: {nnodes} nodes, one torchrun per node")
    command = [
        *torchrun,
        f"--nnodes={nnodes}",
        f"--node-rank={env['SLURM_NODEID']}",
        f"--master-addr={master}",
        f"--master-port={rendezvous_port(env)}",
        "-m", "llava_more", *cli_args,
    ]  # fmt: skip
    return LaunchPlan(
        "torchrun",
        nnodes,
        nproc,
        command,
        f"torchrun: node {env['SLURM_NODEID']} of {nnodes} x {nproc} process(es), master {master}",
    )


def visible_accelerators() -> int:
    """How many CUDA devices this process sees (0 on a CPU machine)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
