"""The paper's published numbers (``paper_results.csv``) and which of its rows an experiment reproduces.

The CSV names rows as the paper prints them ("Phi-4-3.8B", "SigLIP2 ViT-L/14", "LAION (558k)");
``paper_row`` maps an experiment (LLM, encoder, S2, pre-training set) to that row for each of the
four tables and for the project README's comparison table (``readme``: the released checkpoints and
the LLaVA-1.5 baselines), and only when every setting matches the paper's (its LCS-558K
pre-training, no S2 outside table 3...). Demo experiments (``demo-lcs``...) therefore never match.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from llava_more.errors import UserError

REQUIRED_FIELDS = ("source", "table", "group", "row", "ref", "s2", "benchmark", "value")

# Table 1: the LLM decides the row (CLIP, LCS-558K, no S2).
_TABLE1_ROWS = {
    "gemma2-2b": "Gemma-2-2B",
    "phi4-mini": "Phi-4-3.8B",
    "llama3.1-8b": "LLaMA-3.1-8B",
    "deepseek-r1-distill-llama-8b": "DeepSeek-R1-Distill-LLaMA-8B",
    "gemma2-9b": "Gemma-2-9B",
    "vicuna-7b-v1.5": "LLaVA-1.5-7B",
    "llama3-8b": "LLaVA-1.5-LLaMA3-8B",
    "phi-2": "LLaVA-Phi-2.7B",
}
# Tables 2-4: the LLM decides the block.
_GROUPS = {"phi4-mini": "LLaVA-MORE-3.8B (Ours)", "gemma2-9b": "LLaVA-MORE-9B (Ours)"}
# (row label, citation number): the two DINOv2 rows differ only by their citation (48 / 19).
_VISION_ROWS = {
    "clip-l-336": ("CLIP ViT-L/14", None),
    "dinov2-l-224": ("DINOv2 ViT-L/14", "48"),
    "dinov2-l-reg-224": ("DINOv2 ViT-L/14", "19"),
    "siglip-so400m-384": ("SigLIP ViT-L/14", None),
    "siglip2-so400m-384": ("SigLIP2 ViT-L/14", None),
}
# The README table: (LLM, encoder, S2) -> row label; every row is pre-trained on LCS-558K.
_README_ROWS = {
    ("vicuna-7b-v1.5", "clip-l-336", False): "LLaVA-v1.5-7B",
    ("llama3-8b", "clip-l-336", False): "LLaVA-v1.5-LLaMA3-8B",
    ("llama3.1-8b", "clip-l-336", False): "LLaVA-v1.5-LLaMA3_1-8B",
    ("llama3.1-8b", "clip-l-336", True): "LLaVA-v1.5-LLaMA3_1-8B-S2",
    ("llama3.1-8b", "siglip-so400m-384", False): "LLaVA-v1.5-LLaMA3_1-8B-siglip",
    ("llama3.1-8b", "siglip-so400m-384", True): "LLaVA-v1.5-LLaMA3_1-8B-S2-siglip",
    ("phi4-mini", "clip-l-336", False): "LLaVA-v1.5-Phi_4-4B",
    ("gemma2-9b", "clip-l-336", False): "LLaVA-v1.5-gemma_2-9B",
    ("gemma2-9b", "siglip2-so400m-384", False): "LLaVA-v1.5-gemma_2-9B-siglip2",
    ("deepseek-r1-distill-llama-8b", "clip-l-336", False): "LLaVA-v1.5-Distill-LLaMA-8B",
}
_PRETRAIN_ROWS = {
    "lcs": "LLaVA Pre-Train LCS (558k)",
    "laion": "LAION (558k)",
    "recap": "Recap (558k)",
    "laion+recap": "LAION+Recap (558k)",
}


@dataclass(frozen=True)
class PaperKey:
    """One row of one paper table (``ref``/``s2`` only where the label alone is ambiguous)."""

    table: str
    group: str | None
    row: str
    ref: str | None = None
    s2: str | None = None

    def label(self) -> str:
        return f"{self.row} ({self.group})" if self.group else self.row


def paper_row(table: str, llm: str, vision: str, s2: bool, pretrain: str) -> PaperKey | None:
    """The paper row of ``table`` that this experiment reproduces, or None."""
    if table == "readme":
        label = _README_ROWS.get((llm, vision, s2)) if pretrain == "lcs" else None
        return PaperKey(table, None, label) if label else None
    if table == "table1_llm":
        if vision == "clip-l-336" and not s2 and pretrain == "lcs" and llm in _TABLE1_ROWS:
            return PaperKey(table, None, _TABLE1_ROWS[llm])
        return None
    group = _GROUPS.get(llm)
    if group is None:
        return None
    if table == "table2_vision" and not s2 and pretrain == "lcs" and vision in _VISION_ROWS:
        row, ref = _VISION_ROWS[vision]
        return PaperKey(table, group, row, ref=ref)
    if table == "table3_s2" and pretrain == "lcs" and vision in ("clip-l-336", "siglip2-so400m-384"):
        return PaperKey(table, group, _VISION_ROWS[vision][0], s2="yes" if s2 else "no")
    if (
        table == "table4_pretrain_data"
        and vision == "siglip2-so400m-384"
        and not s2
        and pretrain in _PRETRAIN_ROWS
    ):
        return PaperKey(table, group, _PRETRAIN_ROWS[pretrain])
    return None


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
            self.records = [r for r in reader if r["source"] in ("paper", "readme")]

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
