"""The paper's table layouts: which blocks a table has, how its rows are labelled and ordered, which
information columns it prints, and which published row each of our rows reproduces.

- Table 1 (LLMs): a small-scale and a medium-scale block, each with the earlier LLaVA models first
  and a "LLaVA-MORE (Ours)" section after them; rows are LLMs.
- Tables 2-4 (vision encoder, S2, pre-training data): one block per LLM ("LLaVA-MORE-3.8B (Ours)"
  is Phi-4-mini, "LLaVA-MORE-9B (Ours)" Gemma-2-9B); rows are encoders (with Resolution and
  #Tokens), encoders with and without S2 (with an S2 column), or pre-training sets.
- The README table: one block, its own row names and column order.

A row is an experiment at a training stage (``RowKey``); its seeds are averaged into it. Tiny studies
get the same layout with the tiny twins' labels and sizes; only real-size rows are matched to the
paper (``PaperKey``), and only when every setting is the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llava_more.eval.benchmarks import COLUMNS

TABLES = ("table1_llm", "table2_vision", "table3_s2", "table4_pretrain_data", "readme")
TITLES = {
    "table1_llm": "Table 1: the LLM (CLIP ViT-L/14, LCS-558K pre-training)",
    "table2_vision": "Table 2: the visual backbone",
    "table3_s2": "Table 3: image resolution with S2",
    "table4_pretrain_data": "Table 4: the pre-training data (SigLIP2 ViT-L/14)",
    "readme": "README: the LLaVA-MORE models",
}
# The paper's column headers, and the README's own column order.
COLUMN_LABELS = {"ScienceQA": "Science-QA", "MMB-CN": "MMB-Cn", "MMB-EN": "MMB-En"}
COLUMN_GROUPS = (("VQA Benchmarks", COLUMNS[:4]), ("MLLM Benchmarks", COLUMNS[4:]))
README_COLUMNS = (
    "TextVQA", "ScienceQA", "AI2D", "SEED-V", "SEED-All", "SEED-I", "MMMU",
    "MMB-CN", "MMB-EN", "POPE", "GQA", "MME-P", "MME-C",
)  # fmt: skip

OURS = "LLaVA-MORE (Ours)"
SMALL, MEDIUM = "Small-Scale MLLMs", "Medium-Scale MLLMs"
# Table 1: (row label, block, earlier LLaVA model?) in the paper's order.
_LLMS = {
    "phi-2": ("LLaVA-Phi-2.7B", SMALL, True),
    "gemma2-2b": ("Gemma-2-2B", SMALL, False),
    "phi4-mini": ("Phi-4-3.8B", SMALL, False),
    "vicuna-7b-v1.5": ("LLaVA-1.5-7B", MEDIUM, True),
    "llama3-8b": ("LLaVA-1.5-LLaMA3-8B", MEDIUM, True),
    "llama3.1-8b": ("LLaMA-3.1-8B", MEDIUM, False),
    "deepseek-r1-distill-llama-8b": ("DeepSeek-R1-Distill-LLaMA-8B", MEDIUM, False),
    "gemma2-9b": ("Gemma-2-9B", MEDIUM, False),
}
# Tables 2-4: the block of an LLM.
_LLM_BLOCKS = {"phi4-mini": "LLaVA-MORE-3.8B (Ours)", "gemma2-9b": "LLaVA-MORE-9B (Ours)"}
# (label, the paper's citation on the row): the two DINOv2 rows differ only by their citation.
_VISIONS = {
    "clip-l-336": ("CLIP ViT-L/14", None),
    "dinov2-l-224": ("DINOv2 ViT-L/14", "48"),
    "dinov2-l-reg-224": ("DINOv2 ViT-L/14 + registers", "19"),
    "siglip-so400m-384": ("SigLIP ViT-L/14", None),
    "siglip2-so400m-384": ("SigLIP2 ViT-L/14", None),
}
_PRETRAIN = {
    "lcs": "LLaVA Pre-Train LCS (558k)",
    "laion": "LAION (558k)",
    "recap": "Recap (558k)",
    "laion+recap": "LAION+Recap (558k)",
    "demo-lcs": "LCS-like (demo)",
    "demo-alttext": "LAION-like alt-text (demo)",
    "demo-recap": "Recap-like (demo)",
    "demo-alttext+recap": "LAION+Recap-like (demo)",
}
# The README table: (llm, vision, s2) -> its row name, in its order.
_README = {
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
PAPER_PRETRAIN = "lcs"


@dataclass(frozen=True, order=True)
class RowKey:
    """One table row: an experiment's settings at a training stage (its seeds are one row)."""

    llm: str
    vision: str
    s2: bool
    pretrain: str
    stage: int = 2

    def value(self, key: str) -> object:
        return getattr(self, key)


@dataclass(frozen=True)
class PaperKey:
    """One row of the reference CSV (``ref``/``s2`` only where the label alone is ambiguous)."""

    table: str
    group: str | None
    row: str
    ref: str | None = None
    s2: str | None = None

    def label(self) -> str:
        """The row as a reader finds it: with its block in tables 2-4, whose blocks repeat row names."""
        return (
            f"{self.row} ({self.group})"
            if self.group and self.table not in ("table1_llm", "readme")
            else self.row
        )


@dataclass
class RowSpec:
    key: RowKey
    label: str
    section: str | None = None  # a sub-heading inside the block (table 1's "LLaVA-MORE (Ours)")
    paper: PaperKey | None = None
    info: dict[str, str] = field(default_factory=dict)  # S2 / Resolution / #Tokens


@dataclass
class BlockSpec:
    title: str | None
    rows: list[RowSpec]


@dataclass
class TableLayout:
    name: str
    title: str
    columns: tuple[str, ...]  # benchmark columns, in the table's order
    info_columns: tuple[str, ...]
    blocks: list[BlockSpec]
    size: str = "real"

    def rows(self) -> list[RowSpec]:
        return [row for block in self.blocks for row in block.rows]


def llm_label(llm: str) -> str:
    return _LLMS[llm][0] if llm in _LLMS else llm


def vision_label(vision: str) -> str:
    return _VISIONS[vision][0] if vision in _VISIONS else vision


def pretrain_label(pretrain: str) -> str:
    return _PRETRAIN.get(pretrain, pretrain)


def column_label(column: str) -> str:
    return COLUMN_LABELS.get(column, column)


def describe(key: RowKey, axes: tuple[str, ...] = ("llm", "vision", "s2", "pretrain")) -> str:
    """A readable name of a row from the named settings (``llm`` ... ``pretrain``)."""
    parts = []
    for axis in axes:
        if axis == "llm":
            parts.append(llm_label(key.llm))
        elif axis == "vision":
            parts.append(vision_label(key.vision))
        elif axis == "s2":
            parts.append("S2" if key.s2 else "no S2")
        elif axis == "pretrain":
            parts.append(pretrain_label(key.pretrain))
    return ", ".join(parts)


def _order(values: dict, value: object) -> tuple[int, str]:
    keys = list(values)
    return (keys.index(value), "") if value in keys else (len(keys), str(value))


# --------------------------------------------------------------------------- paper rows


def paper_row(table: str, key: RowKey) -> PaperKey | None:
    """The published row of ``table`` that this real-size row reproduces, or None."""
    if key.stage != 2:
        return None
    if table == "table1_llm":
        if key.vision == "clip-l-336" and not key.s2 and key.pretrain == PAPER_PRETRAIN and key.llm in _LLMS:
            label, block, earlier = _LLMS[key.llm]
            return PaperKey(table, block if earlier else OURS, label)
        return None
    if table == "readme":
        label = _README.get((key.llm, key.vision, key.s2))
        return PaperKey(table, None, label) if label and key.pretrain == PAPER_PRETRAIN else None
    group = _LLM_BLOCKS.get(key.llm)
    if group is None:
        return None
    if table == "table2_vision" and not key.s2 and key.pretrain == PAPER_PRETRAIN and key.vision in _VISIONS:
        return PaperKey(table, group, _paper_vision(key.vision), ref=_VISIONS[key.vision][1])
    if (
        table == "table3_s2"
        and key.pretrain == PAPER_PRETRAIN
        and key.vision in ("clip-l-336", "siglip2-so400m-384")
    ):
        return PaperKey(table, group, _paper_vision(key.vision), s2="yes" if key.s2 else "no")
    if (
        table == "table4_pretrain_data"
        and key.vision == "siglip2-so400m-384"
        and not key.s2
        and key.pretrain in ("lcs", "laion", "recap", "laion+recap")
    ):
        return PaperKey(table, group, _PRETRAIN[key.pretrain])
    return None


def _paper_vision(vision: str) -> str:
    # The paper prints both DINOv2 rows as "DINOv2 ViT-L/14"; the citation tells them apart.
    return _VISIONS[vision][0].removesuffix(" + registers")


# --------------------------------------------------------------------------- layouts

# What a table's row label is made of (the settings its rows differ in by design).
_ROW_AXES = {
    "table1_llm": ("llm",),
    "table2_vision": ("vision",),
    "table3_s2": ("vision",),
    "table4_pretrain_data": ("pretrain",),
    "readme": ("llm", "vision", "s2"),
}
_INFO = {
    "table2_vision": ("Resolution", "#Tokens"),
    "table3_s2": ("S2", "Resolution", "#Tokens"),
}


def _info(table: str, key: RowKey, size: str) -> dict[str, str]:
    wanted = _INFO.get(table, ())
    if not wanted:
        return {}
    from llava_more.model import get_vision  # the registry only: no torch

    vision = get_vision(key.vision)
    values = {
        "S2": "✓" if key.s2 else "✗",
        "Resolution": str(vision.image_size(size)),
        "#Tokens": str(vision.image_tokens(size)),
    }
    return {name: values[name] for name in wanted}


def _block_of(table: str, key: RowKey, size: str) -> tuple[str | None, str | None]:
    """(block title, section title) of a row."""
    if table == "readme":
        return None, None
    if table == "table1_llm":
        label, block, earlier = _LLMS.get(key.llm, (key.llm, MEDIUM, False))
        return block, (None if earlier else OURS)
    if size == "real" and key.llm in _LLM_BLOCKS:
        return _LLM_BLOCKS[key.llm], None
    return (f"{llm_label(key.llm)} (tiny twin)" if size == "tiny" else llm_label(key.llm)), None


def _sort_key(table: str, key: RowKey) -> tuple:
    if table == "table1_llm":
        primary: tuple = _order(_LLMS, key.llm)
    elif table == "table2_vision":
        primary = _order(_VISIONS, key.vision)
    elif table == "table3_s2":
        primary = (*_order(_VISIONS, key.vision), key.s2)
    elif table == "table4_pretrain_data":
        primary = _order(_PRETRAIN, key.pretrain)
    else:
        readme = {k: i for i, k in enumerate(_README)}
        primary = (readme.get((key.llm, key.vision, key.s2), len(readme)),)
    rest = (*_order(_LLMS, key.llm), *_order(_VISIONS, key.vision), key.s2, *_order(_PRETRAIN, key.pretrain))
    return (*primary, *rest, -key.stage)


def _label(table: str, key: RowKey, varying: tuple[str, ...]) -> str:
    if table == "readme" and (key.llm, key.vision, key.s2) in _README:
        label = _README[(key.llm, key.vision, key.s2)]
        extra = tuple(a for a in varying if a == "pretrain")
    else:
        axes = _ROW_AXES[table]
        label = describe(key, axes) + (" + S2" if table == "table3_s2" and key.s2 else "")
        extra = tuple(a for a in varying if a not in axes and not (table == "table3_s2" and a == "s2"))
    if extra:
        label += f" ({describe(key, extra)})"
    return label if key.stage == 2 else f"{label} (stage 1 only)"


def table_layout(table: str, keys: list[RowKey], size: str, with_paper: bool | None = None) -> TableLayout:
    """The layout of ``table`` for these rows (a study's experiments in that table, and the stage-1
    rows evaluated for them); ``size`` is the study's. Rows are matched to the paper's when
    ``with_paper`` (default: for real-size studies; a published study's tiny twin asks for it too)."""
    if with_paper is None:
        with_paper = size == "real"
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}")
    blocks: dict[str | None, list[RowKey]] = {}
    for key in sorted(set(keys), key=lambda k: (_block_rank(table, k, size), _sort_key(table, k))):
        blocks.setdefault(_block_of(table, key, size)[0], []).append(key)
    out = []
    for title, members in blocks.items():
        # Settings that differ inside the block beyond the table's own axis go into the label.
        varying = tuple(
            axis for axis in ("llm", "vision", "s2", "pretrain") if len({k.value(axis) for k in members}) > 1
        )
        rows = [
            RowSpec(
                key,
                _label(table, key, varying),
                section=_block_of(table, key, size)[1],
                paper=paper_row(table, key) if with_paper else None,
                info=_info(table, key, size),
            )
            for key in members
        ]
        out.append(BlockSpec(title, rows))
    columns = README_COLUMNS if table == "readme" else COLUMNS
    return TableLayout(table, TITLES[table], columns, _INFO.get(table, ()), out, size)


def _block_rank(table: str, key: RowKey, size: str) -> tuple:
    title = _block_of(table, key, size)[0]
    if table == "table1_llm":
        return (0 if title == SMALL else 1,)
    if table == "readme":
        return (0,)
    ranked = list(_LLM_BLOCKS)
    return (*_order(dict.fromkeys(ranked), key.llm),)
