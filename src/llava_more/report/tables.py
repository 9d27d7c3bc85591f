"""The paper's tables filled with a study's numbers: the model every output format renders.

A ``TableView`` follows a ``layout.TableLayout`` (blocks, sections, row labels, information columns)
and holds, per row and column, a ``Cell``: our value (mean over seeds) with its 95% bootstrap
interval and seed spread, whether it is the best of its block, the paper's value and our delta
where the row reproduces a published one, and the MMBench flag. The last column is the average
over the table's benchmarks (MME on a percentage scale). Each row that is not its block's baseline
also carries its difference to the baseline with a paired bootstrap interval: the block's first
row, or in table 3 the same encoder without S2.

A table can be built before any training (``results`` empty): the cells then hold the paper's
values only, which is how the ``paper`` study's layouts are checked against the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llava_more.eval.benchmarks import AVERAGE
from llava_more.report.bootstrap import Estimate
from llava_more.report.layout import RowKey, RowSpec, TableLayout
from llava_more.report.reference import PaperResults
from llava_more.report.results import StudyResults, normalised

DISPLAY_DECIMALS = 1


@dataclass
class Cell:
    ours: Estimate | None = None
    paper: float | None = None
    best: bool = False
    flag: float | None = None  # share of answers no rule could read (MMBench)

    @property
    def delta(self) -> float | None:
        return None if self.ours is None or self.paper is None else self.ours.value - self.paper


@dataclass
class TableRow:
    spec: RowSpec
    cells: dict[str, Cell]
    experiments: list[str] = field(default_factory=list)  # the ids of its runs (one per seed)
    seeds: list[int | None] = field(default_factory=list)
    baseline: TableRow | None = None
    differences: dict[str, Estimate] = field(default_factory=dict)  # row - baseline

    @property
    def key(self) -> RowKey:
        return self.spec.key

    @property
    def label(self) -> str:
        return self.spec.label


@dataclass
class TableBlock:
    title: str | None
    rows: list[TableRow]


@dataclass
class TableView:
    layout: TableLayout
    columns: tuple[str, ...]  # benchmark columns shown, then AVERAGE
    blocks: list[TableBlock]
    with_paper: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.layout.name

    @property
    def title(self) -> str:
        return self.layout.title

    @property
    def benchmarks(self) -> tuple[str, ...]:
        return tuple(c for c in self.columns if c != AVERAGE)

    def rows(self) -> list[TableRow]:
        return [row for block in self.blocks for row in block.rows]

    @property
    def has_intervals(self) -> bool:
        return any(c.ours is not None and c.ours.has_interval for r in self.rows() for c in r.cells.values())

    @property
    def max_seeds(self) -> int:
        return max((len(r.seeds) for r in self.rows()), default=0)


def _baseline(layout: TableLayout, block_rows: list[TableRow], row: TableRow) -> TableRow | None:
    if row.key.stage != 2:
        return None
    if layout.name == "table3_s2":
        for other in block_rows:
            k = other.key
            if (k.llm, k.vision, k.pretrain, k.stage, k.s2) == (
                row.key.llm,
                row.key.vision,
                row.key.pretrain,
                2,
                False,
            ):
                return None if other is row else other
        return None
    first = next((r for r in block_rows if r.key.stage == 2), None)
    return None if first is None or first is row else first


def _display(value: float) -> float:
    return round(value, DISPLAY_DECIMALS)


def build_table(
    layout: TableLayout, results: StudyResults, reference: PaperResults | None = None
) -> TableView:
    """Fill ``layout`` with ``results`` (and the paper's values when ``reference`` is given)."""
    present = results.columns()
    if results.rows:
        benchmarks = tuple(c for c in layout.columns if c in present)
    else:  # before any training: the paper's columns
        benchmarks = layout.columns
    columns = (*benchmarks, AVERAGE) if benchmarks else ()
    blocks = []
    with_paper = False
    for spec_block in layout.blocks:
        rows = []
        for spec in spec_block.rows:
            runs = results.runs(spec.key)
            paper = reference.values(spec.paper) if reference is not None and spec.paper else {}
            with_paper = with_paper or bool(paper)
            cells = {}
            for column in benchmarks:
                flags = [r.flag(column) for r in runs if r.flag(column)]
                cells[column] = Cell(
                    results.estimate(spec.key, column), paper.get(column), False, max(flags, default=None)
                )
            paper_avg = (
                sum(normalised(c, paper[c]) for c in benchmarks) / len(benchmarks)
                if benchmarks and all(c in paper for c in benchmarks)
                else None
            )
            cells[AVERAGE] = Cell(results.average(spec.key, benchmarks), paper_avg)
            rows.append(TableRow(spec, cells, [r.experiment_id for r in runs], [r.seed for r in runs]))
        for row in rows:
            row.baseline = _baseline(layout, rows, row)
            if row.baseline is not None:
                for column in benchmarks:
                    diff = results.difference(row.key, row.baseline.key, column)
                    if diff is not None:
                        row.differences[column] = diff
                diff = results.average_difference(row.key, row.baseline.key, benchmarks)
                if diff is not None:
                    row.differences[AVERAGE] = diff
        for column in columns:
            values = [r.cells[column].ours.value for r in rows if r.key.stage == 2 and r.cells[column].ours]
            if len(values) > 1:  # a lone row is no one's best
                top = _display(max(values))
                for r in rows:
                    ours = r.cells[column].ours
                    r.cells[column].best = (
                        r.key.stage == 2 and ours is not None and _display(ours.value) == top
                    )
        blocks.append(TableBlock(spec_block.title, rows))
    view = TableView(layout, columns, blocks, with_paper)
    view.notes = _notes(view)
    return view


def _notes(view: TableView) -> list[str]:
    notes = ["Bold: the best instruction-tuned model of its block in each column."]
    if view.has_intervals:
        notes.append(
            "[a, b]: 95% bootstrap interval over the benchmark's questions, each benchmark scored with its own "
            "aggregation (POPE F1, MME acc + acc+ per image, MMBench's circular questions, SEED's splits)."
        )
    if view.max_seeds > 1:
        notes.append(
            "Values are means over the training seeds; σ is their standard deviation, and the interval also "
            "redraws the seeds."
        )
    if AVERAGE in view.columns:
        notes.append(
            f"{AVERAGE}: the mean of the table's benchmarks, with MME-P out of 2000 and MME-C out of 800 as percentages."
        )
    if view.with_paper:
        notes.append("Under each value: the paper's value and our delta (ours − paper).")
    if any(row.differences for row in view.rows()):
        notes.append(
            "Differences: each row minus its block's baseline (the first row; in table 3 the same encoder without "
            "S2), with a paired bootstrap interval; * marks an interval that excludes zero."
        )
    for row in view.rows():
        for column, cell in row.cells.items():
            if cell.flag:
                notes.append(f"† {row.label}, {column}: scored without a GPT judge; "
                             f"{cell.flag * 100:.1f}% of answers matched no option and count as wrong.")  # fmt: skip
    return notes
