"""The paper's published numbers (``reference/paper_results.csv``), looked up by ``layout.PaperKey``.

The CSV names rows as the paper prints them ("Phi-4-3.8B", "SigLIP2 ViT-L/14", "LAION (558k)");
``layout.paper_row`` says which of them an experiment reproduces. The four tables are the rows with
``source=paper``, the project README's table those with ``source=readme``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from llava_more.errors import UserError
from llava_more.report.layout import PaperKey

REQUIRED_FIELDS = ("source", "table", "group", "row", "ref", "s2", "benchmark", "value")
SOURCES = ("paper", "readme")


class PaperResults:
    """``paper_results.csv`` indexed by row: ``values(key)`` -> {column: value} (printed '-' omitted)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(
                f"{self.path}: reference results not found; pass --reference PATH or leave it out"
            )
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED_FIELDS if c not in (reader.fieldnames or [])]
            if missing:
                raise UserError(
                    f"{self.path}: missing column(s) {', '.join(missing)}; expected {', '.join(REQUIRED_FIELDS)}"
                )
            self.records = [r for r in reader if r["source"] in SOURCES]

    def keys(self, table: str) -> list[PaperKey]:
        """The rows of ``table`` in the CSV's order (the paper's). A key names the citation or the
        S2 setting only where the label alone is ambiguous, as ``layout.paper_row`` does."""
        rows: list[tuple[str, str, str, str]] = []
        for r in self.records:
            row = (r["group"], r["row"], r["ref"], r["s2"])
            if r["table"] == table and row not in rows:
                rows.append(row)
        keys = []
        for group, label, ref, s2 in rows:
            same = [o for o in rows if o[:2] == (group, label) and o != (group, label, ref, s2)]
            keep_s2 = any(o[3] != s2 for o in same)
            keep_ref = any(o[3] == s2 and o[2] != ref for o in same)
            keys.append(
                PaperKey(table, group or None, label, ref if keep_ref else None, s2 if keep_s2 else None)
            )
        return keys

    def values(self, key: PaperKey) -> dict[str, float]:
        found: dict[str, float] = {}
        for r in self.records:
            if (r["table"], r["row"]) != (key.table, key.row) or (key.group and r["group"] != key.group):
                continue
            if (key.ref and r["ref"] != key.ref) or (key.s2 and r["s2"] != key.s2):
                continue
            if r["value"].strip():
                try:
                    found[r["benchmark"]] = float(r["value"])
                except ValueError:
                    raise UserError(
                        f"{self.path}: row {key.label()} {r['benchmark']}: value {r['value']!r} is not a number"
                    ) from None
        return found
