"""A real SLURM cluster on this machine for the tests of ``profiles/slurm``, and helpers to drive it.

``scripts/slurm/start_cluster.sh`` installs and starts slurmctld, munged and two slurmd nodes
(partitions ``cpu`` and ``gpu``, fake GPUs); the session fixture ``slurm_cluster`` starts it and stops it again if it
was not already running. A machine that cannot run SLURM (not root, no apt) fails the tests that need it,
with the reason: a skipped SLURM test would hide a broken profile.

Import the fixture into a test module (``from tests.slurm_cluster import slurm_cluster``) rather than
through a conftest.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
START_SCRIPT = REPO / "scripts" / "slurm" / "start_cluster.sh"
STOP_SCRIPT = REPO / "scripts" / "slurm" / "stop_cluster.sh"
PROFILE_DIR = REPO / "profiles" / "slurm"

# The profile polls every 20 s (kind to a shared slurmctld); the tests poll every second. The plugin
# still adds 10 s to the interval after each poll that finds no finished job.
FAST_POLLING = ("--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1")
# Cold start installs the Debian packages (apt-get update + install: about 30 s here).
START_TIMEOUT_S = 600


def profile_config() -> dict:
    """The SLURM profile as a dict (what ``--profile profiles/slurm`` passes to snakemake)."""
    return yaml.safe_load((PROFILE_DIR / "config.yaml").read_text())


def rule_resources(rule: str) -> dict:
    """The resources the profile gives ``rule``: its defaults overlaid with its set-resources."""
    config = profile_config()
    return {**config["default-resources"], **config.get("set-resources", {}).get(rule, {})}


def set_resources_args(overrides: dict[str, dict]) -> list[str]:
    """``--set-resources`` arguments: the profile's per-rule resources with ``overrides`` applied.

    A ``--set-resources`` on the command line replaces the profile's whole list (it does not merge),
    so changing one value means passing all of them. An override of ``None`` drops the resource.
    """
    per_rule = {rule: dict(values) for rule, values in profile_config().get("set-resources", {}).items()}
    for rule, values in overrides.items():
        merged = {**per_rule.get(rule, {}), **values}
        per_rule[rule] = {key: value for key, value in merged.items() if value is not None}
    items = [f"{rule}:{key}={value}" for rule, values in per_rule.items() for key, value in values.items()]
    return ["--set-resources", *items]


def start_cluster() -> bool:
    """Start the cluster (idempotent); True when this call started it, False when it was running."""
    if os.geteuid() != 0:
        pytest.fail(
            f"the SLURM tests need root to install and start SLURM ({START_SCRIPT}); run them as root"
        )
    try:
        done = subprocess.run(
            ["bash", str(START_SCRIPT)], capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{START_SCRIPT} did not finish in {START_TIMEOUT_S} s (apt or a daemon hangs)")
    if done.returncode != 0:
        pytest.fail(f"cannot start the SLURM test cluster: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip().splitlines()[-1] == "started"


def stop_cluster() -> None:
    subprocess.run(["bash", str(STOP_SCRIPT)], capture_output=True, text=True, timeout=120, check=False)


SLURM_PACKAGES = ("slurmctld", "slurmd", "slurm-client")
# The lock scripts/apt_lock.sh takes: the test workers install and remove packages one at a time.
APT_LOCK = "/var/lock/llava-more-apt.lock"


def remove_packages() -> None:
    """Uninstall what the start script installed. With the SLURM client installed and no daemon
    running, every later `snakemake` start takes about 11 s (the executor plugin calls sacct,
    squeue and scontrol, each waiting for its timeout), so a machine is left as it was found."""
    subprocess.run(
        ["flock", "-w", "900", APT_LOCK, "apt-get", "remove", "-y", "-qq", *SLURM_PACKAGES],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )  # fmt: skip


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[None]:
    """A running single-node SLURM cluster for the whole test session (left as found afterwards)."""
    installed_before = shutil.which("slurmctld") is not None
    started_here = start_cluster()
    try:
        yield
    finally:
        if started_here:
            stop_cluster()
        if not installed_before:
            remove_packages()


def snakemake_command(workdir: Path, *args: str, timeout_s: int, snakefile: Path | None = None) -> list[str]:
    """``snakemake --profile profiles/slurm`` in ``workdir``, killed after ``timeout_s``.

    The plugin waits forever on a status command that keeps failing, hence the hard kill.
    """
    command = ["timeout", "-s", "KILL", str(timeout_s), sys.executable, "-m", "snakemake"]
    command += ["--profile", str(PROFILE_DIR), "--directory", str(workdir), *FAST_POLLING]
    if snakefile is not None:
        command += ["--snakefile", str(snakefile)]
    return [*command, *args]


def run_snakemake(
    workdir: Path,
    *args: str,
    timeout_s: int,
    snakefile: Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run snakemake through the profile (``env``: extra environment for it and its jobs); fail the test
    with its log when it fails. Returns the log."""
    done = subprocess.run(
        snakemake_command(workdir, *args, timeout_s=timeout_s, snakefile=snakefile),
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    log = done.stdout + done.stderr
    if done.returncode != 0:
        reason = (
            "killed after the time limit" if done.returncode in (124, 137, -9) else f"rc {done.returncode}"
        )
        pytest.fail(
            f"snakemake through profiles/slurm failed ({reason}):\n{log[-6000:]}\n{slurm_logs(workdir)}"
        )
    return log


def slurm_logs(workdir: Path, limit_chars: int = 4000) -> str:
    """The tail of each SLURM job log the plugin kept (it deletes those of successful jobs)."""
    parts = []
    for log in sorted((workdir / "logs" / "slurm").rglob("*.log")):
        parts.append(f"--- {log.relative_to(workdir)}\n{log.read_text(errors='replace')[-limit_chars:]}")
    return "\n".join(parts)


def slurm(*args: str, timeout_s: int = 30) -> str:
    """Run a SLURM client command (``scontrol``, ``squeue``...) and return its stdout."""
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def job_state(job_id: str) -> str:
    """SLURM's state of a job (``RUNNING``, ``PENDING``, ``COMPLETED``...), finished jobs included."""
    return slurm("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T").strip()


def wait_for(
    condition: Callable[[], bool],
    what: str,
    timeout_s: float,
    *,
    run: subprocess.Popen | None = None,
    run_log: Path | None = None,
) -> None:
    """Poll ``condition()`` until true; fail naming ``what`` after ``timeout_s``.

    ``run`` is a snakemake that must keep running meanwhile: its exit fails the wait at once, with
    the tail of ``run_log``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        if run is not None and run.poll() is not None:
            log = run_log.read_text(errors="replace")[-6000:] if run_log else ""
            pytest.fail(f"snakemake exited (rc {run.returncode}) while waiting for {what}:\n{log}")
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
