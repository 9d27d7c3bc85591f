"""A scratch copy of the repository's working tree for end-to-end tests (Snakemake, DVC, SLURM).

Copies what the workflow needs, not the artifacts of earlier runs, and makes it a git repository
(DVC needs one). Tests run the real tools in it with the venv's ``bin`` first on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COPY = (
    "Snakefile",
    "params.yaml",
    "workflow",
    "profiles",
    ".dvc/config",
    ".dvcignore",
    "reference",
    "Makefile",
)


def make_workspace(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPY:
        src = ROOT / name
        if not src.exists():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, dirs_exist_ok=True)
        else:
            shutil.copy2(src, target)
    (dest / ".gitignore").write_text((ROOT / ".gitignore").read_text())
    run(["git", "init", "-q"], dest)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], dest)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "workspace"], dest)
    return dest


def env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}


def run(cmd: list[str], cwd: Path, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


def tree_digest(path: Path) -> dict[str, str]:
    """sha256 of every file under ``path`` (relative names), to compare artifacts byte for byte.

    Snakemake's ``.snakemake_timestamp`` markers in directory outputs are bookkeeping, not artifacts.
    """
    import hashlib

    out = {}
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.name != ".snakemake_timestamp"):
        out[str(file.relative_to(path))] = hashlib.sha256(file.read_bytes()).hexdigest()
    return out


def tree_digest_file(path: Path) -> dict[str, str]:
    """``tree_digest`` for a single file."""
    import hashlib

    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
