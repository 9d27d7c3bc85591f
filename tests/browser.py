"""A real headless browser for the report tests: Debian's ``chromium``, installed when missing.

``scripts/install_chromium.sh`` installs the package with apt-get (the tests run as root on CI's fresh
machines, as the SLURM tests do); a machine that cannot install it fails the tests that need it, with
the reason, rather than skipping them. ``render`` opens a page, takes a screenshot and returns the
DOM after the page's load handlers ran, with the page's console messages.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALL_SCRIPT = REPO / "scripts" / "install_chromium.sh"
INSTALL_TIMEOUT_S = 600
RENDER_TIMEOUT_S = 120
_CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\] (.*)$")


def chromium() -> str:
    """The browser's path, installing it first when it is missing."""
    found = shutil.which("chromium")
    if found:
        return found
    try:
        done = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True,
                              timeout=INSTALL_TIMEOUT_S, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"{INSTALL_SCRIPT} did not finish in {INSTALL_TIMEOUT_S} s")
    if done.returncode != 0:
        pytest.fail(
            f"cannot install chromium for the browser tests: {done.stderr.strip() or done.stdout.strip()}"
        )
    return done.stdout.strip().splitlines()[-1]


@dataclass
class Rendered:
    dom: str
    console: list[str]  # the page's console messages (errors and uncaught exceptions included)
    screenshot: Path


def _run(browser: str, page: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               "--enable-logging=stderr", "--v=0", *extra, page.resolve().as_uri()]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=RENDER_TIMEOUT_S, check=False)
    if done.returncode != 0:
        pytest.fail(f"chromium exited {done.returncode} on {page}: {done.stderr[-2000:]}")
    return done


def render(page: Path, screenshot: Path, width: int = 1400, height: int = 2400) -> Rendered:
    browser = chromium()
    dom = _run(browser, page, "--dump-dom")
    shot = _run(browser, page, f"--window-size={width},{height}", f"--screenshot={screenshot}")
    console = [m[1] for line in (dom.stderr + shot.stderr).splitlines() if (m := _CONSOLE.search(line))]
    if not screenshot.is_file():
        pytest.fail(f"chromium wrote no screenshot of {page}: {shot.stderr[-2000:]}")
    return Rendered(dom.stdout, console, screenshot)
