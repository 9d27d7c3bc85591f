"""The launch command built from the environment: laptop, one GPU node, SLURM multi-node."""

from __future__ import annotations

from pathlib import Path

import pytest

from llava_more.errors import UserError
from llava_more.train.launch import expand_nodelist, plan_launch, rendezvous_port, slurm_gpus_per_node

ARGS = ["train", "--stage", "2", "--init", "runs/x/stage1/e", "--protocol", "llava15"]
PY = "/venv/bin/python"

SLURM_BATCH = {  # what sbatch gives the batch script of a 4-node job with 4 GPUs per node
    "SLURM_JOB_ID": "81234",
    "SLURM_JOB_NODELIST": "gpu[07-09],gpu12",
    "SLURM_JOB_NUM_NODES": "4",
    "SLURM_NNODES": "4",
    "SLURM_GPUS_ON_NODE": "4",
    "SLURM_NODEID": "0",
}


def test_nodelist_expansion():
    assert expand_nodelist("gpu[07-09],gpu12") == ["gpu07", "gpu08", "gpu09", "gpu12"]
    assert expand_nodelist("node1") == ["node1"]
    assert expand_nodelist("a[1,3-4]b,c[10-11]") == ["a1b", "a3b", "a4b", "c10", "c11"]
    with pytest.raises(UserError):
        expand_nodelist("")


def test_gpus_per_node_forms():
    assert slurm_gpus_per_node({"SLURM_GPUS_ON_NODE": "4"}) == 4
    assert slurm_gpus_per_node({"SLURM_GPUS_PER_NODE": "a100:8"}) == 8
    assert slurm_gpus_per_node({"SLURM_GPUS_PER_NODE": "gpu:2(IDX:0-1)"}) == 2
    assert slurm_gpus_per_node({}) is None


def test_laptop_cpu_trains_in_process():
    plan = plan_launch(ARGS, {}, local_devices=0, needs_process_group=False, python=PY)
    assert (plan.mode, plan.command, plan.world_size) == ("single", None, 1)


def test_deepspeed_on_one_device_still_gets_a_process_group():
    plan = plan_launch(ARGS, {}, local_devices=1, needs_process_group=True, python=PY)
    assert plan.mode == "torchrun"
    assert plan.command[:3] == [PY, "-m", "torch.distributed.run"]
    assert "--nproc-per-node=1" in plan.command and "--standalone" in plan.command
    assert plan.command[-len(ARGS) - 2 :] == ["-m", "llava_more", *ARGS]


def test_one_node_with_gpus_uses_standalone_torchrun():
    plan = plan_launch(ARGS, {}, local_devices=4, needs_process_group=False, python=PY)
    assert plan.world_size == 4 and "--nproc-per-node=4" in plan.command and "srun" not in plan.command


def test_cpu_processes_can_be_forced():
    plan = plan_launch(ARGS, {}, local_devices=0, needs_process_group=False, nproc_per_node=2, python=PY)
    assert plan.mode == "torchrun" and "--nproc-per-node=2" in plan.command


def test_already_a_worker_trains_in_process():
    plan = plan_launch(
        ARGS, {"RANK": "3", "WORLD_SIZE": "8"}, local_devices=1, needs_process_group=True, python=PY
    )
    assert (plan.mode, plan.command) == ("worker", None)


def test_slurm_batch_script_starts_one_srun_task_per_node():
    plan = plan_launch(ARGS, SLURM_BATCH, local_devices=4, needs_process_group=True, python=PY)
    assert plan.mode == "srun" and plan.world_size == 16
    assert plan.command[:5] == [
        "srun",
        "--nodes=4",
        "--ntasks=4",
        "--ntasks-per-node=1",
        "--kill-on-bad-exit=1",
    ]
    # each task runs this same command again, and then sees its own SLURM_NODEID
    assert plan.command[5:] == [PY, "-m", "llava_more", *ARGS]


@pytest.mark.parametrize("node_id", ["0", "2"])
def test_slurm_task_on_each_node_starts_torchrun_with_the_rendezvous(node_id):
    env = {**SLURM_BATCH, "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4", "SLURM_NODEID": node_id}
    plan = plan_launch(ARGS, env, local_devices=4, needs_process_group=True, python=PY)
    assert plan.mode == "torchrun" and plan.world_size == 16
    cmd = plan.command
    assert "srun" not in cmd
    assert "--nnodes=4" in cmd and "--nproc-per-node=4" in cmd
    assert f"--node-rank={node_id}" in cmd
    assert "--master-addr=gpu07" in cmd  # first host of the node list
    assert f"--master-port={rendezvous_port(env)}" in cmd and rendezvous_port(env) == 29500 + 81234 % 20000
    # stop signals reach the workers through the launcher's stop file, not through torchrun
    assert "--signals-to-handle=SIGHUP,SIGQUIT" in cmd
    assert any(a.startswith("--shutdown-timeout=") for a in cmd)
    assert cmd[-len(ARGS) - 2 :] == ["-m", "llava_more", *ARGS]


def test_single_node_slurm_job_needs_no_srun():
    env = {**SLURM_BATCH, "SLURM_JOB_NODELIST": "gpu07", "SLURM_JOB_NUM_NODES": "1", "SLURM_NNODES": "1",
           "SLURM_GPUS_ON_NODE": "2"}  # fmt: skip
    plan = plan_launch(ARGS, env, local_devices=2, needs_process_group=True, python=PY)
    assert plan.mode == "torchrun" and plan.world_size == 2 and "--standalone" in plan.command


def test_workers_rerun_exactly_this_command():
    from llava_more.cli import build_parser
    from llava_more.train.commands import worker_argv

    argv = [
        "train", "--stage", "1", "--init", "i", "--data", "d.json", "--image-root", "r", "--out", "o",
        "--work-dir", "w", "--params", "p.yaml", "--protocol", "demo", "--max-steps", "7", "--seed", "3",
        "--nproc-per-node", "2",
    ]  # fmt: skip
    parser = build_parser()
    args = parser.parse_args(argv)
    assert worker_argv(args) == argv
    assert vars(parser.parse_args(worker_argv(args))) == vars(args)


def test_unknown_protocol_is_a_one_line_user_error(capsys):
    from llava_more.cli import main

    params = Path(__file__).resolve().parents[1] / "params.yaml"
    argv = ["train", "--stage", "1", "--init", "i", "--data", "d.json", "--image-root", "r", "--out", "o",
            "--work-dir", "w", "--params", str(params), "--protocol", "llava-15"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "protocol 'llava-15' is not defined" in err and "llava15" in err
