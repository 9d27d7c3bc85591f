"""The lines a finished workflow ends on: where the study's tables, findings and report are.

The Snakefile registers ``print_finished`` to run when Snakemake exits after a successful run, so
these are the last lines on the screen (after Snakemake's own log and timing lines). Only what
exists is listed; the findings line counts the verdicts (from ``findings.json``). Torch-free and
quick: it runs in the Snakemake process.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from llava_more import paths


def finished_lines(study: str, root: str | Path = ".") -> list[str]:
    root = Path(root)
    lines = []
    tables = root / paths.tables_dir(study)
    if tables.is_dir():
        names = sorted(p.stem for p in tables.glob("*.md"))
        lines.append(f"  tables:   {paths.tables_dir(study)}/ ({', '.join(names)}; also .csv and .tex)")
    findings = root / paths.findings(study)
    if findings.is_file():
        verdicts = _verdicts(root / paths.findings_json(study))
        lines.append(f"  findings: {paths.findings(study)}" + (f" ({verdicts})" if verdicts else ""))
    if (root / paths.report_html(study)).is_file():
        lines.append(f"  report:   {paths.report_html(study)} (tables, findings and figures in one page)")
    return [f"Results of study {study}:", *lines] if lines else []


def _verdicts(path: Path) -> str:
    try:
        claims = json.loads(path.read_text(encoding="utf-8"))["claims"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    if not claims:
        return "no claims listed"
    counts = Counter(c.get("verdict") for c in claims)
    return ", ".join(f"{n} {verdict}" for verdict, n in counts.items())


def print_finished(study: str) -> None:
    lines = finished_lines(study)
    if lines:
        print("\n".join(lines), file=sys.stderr, flush=True)
