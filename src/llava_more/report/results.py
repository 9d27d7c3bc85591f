"""A study's evaluated models as rows (an experiment at a stage, its seeds together), with the
numbers every view of the report reads: a cell's value and interval, a row's average over
benchmarks, and the paired difference of two rows.

The tables, the findings and the figures all ask this one object, so a number printed in a table
and the same number behind a finding are computed once, from the same bootstrap draws.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from llava_more.eval.benchmarks import AVERAGE
from llava_more.report.bootstrap import Bootstrap, Estimate
from llava_more.report.layout import RowKey
from llava_more.report.scores import ExperimentScores

# The average over benchmarks puts MME on the percentage scale of the others: its perception score
# is out of 2000 (10 categories x 200) and its cognition score out of 800 (4 x 200).
SCALE_MAX = {"MME-P": 2000.0, "MME-C": 800.0}


def normalised(column: str, value):
    """A column value on a 0-100 scale (MME's scores as a share of their maximum)."""
    return value / SCALE_MAX[column] * 100.0 if column in SCALE_MAX else value


class StudyResults:
    """Every row's runs (one per training seed) and the bootstrap shared by all views."""

    def __init__(self, runs: list[ExperimentScores], bootstrap: Bootstrap | None = None):
        self.bootstrap = bootstrap or Bootstrap()
        self.rows: dict[RowKey, list[ExperimentScores]] = defaultdict(list)
        for run in runs:
            self.rows[run.key].append(run)
        for members in self.rows.values():
            members.sort(key=lambda r: (r.seed is not None, r.seed or 0))
            seeds = [r.seed for r in members]
            if len(set(seeds)) != len(seeds):
                raise ValueError(f"{members[0].experiment_id}: two evaluations of the same seed")
        self._prepared: set[str] = set()

    def runs(self, key: RowKey) -> list[ExperimentScores]:
        return self.rows.get(key, [])

    def has(self, key: RowKey, column: str) -> bool:
        runs = self.runs(key)
        return bool(runs) and all(column in r.columns for r in runs)

    def columns(self) -> set[str]:
        return {c for runs in self.rows.values() for r in runs for c in r.columns}

    def _prepare(self, column: str) -> None:
        if column not in self._prepared:
            samples = [r.samples[column] for runs in self.rows.values() for r in runs if column in r.samples]
            self.bootstrap.prepare(column, samples)
            self._prepared.add(column)

    def replicates(self, key: RowKey, column: str) -> np.ndarray | None:
        """The row's bootstrap replicates of ``column`` (None without per-sample scores for every seed)."""
        runs = self.runs(key)
        if not runs or not all(column in r.samples for r in runs):
            return None
        self._prepare(column)
        return self.bootstrap.row_replicates(key, column, [r.samples[column] for r in runs])

    def value(self, key: RowKey, column: str) -> float | None:
        if not self.has(key, column):
            return None
        return float(np.mean([r.columns[column] for r in self.runs(key)]))

    def estimate(self, key: RowKey, column: str) -> Estimate | None:
        if not self.has(key, column):
            return None
        values = [r.columns[column] for r in self.runs(key)]
        return self.bootstrap.estimate(values, self.replicates(key, column))

    def average_replicates(self, key: RowKey, columns: tuple[str, ...]) -> np.ndarray | None:
        parts = [self.replicates(key, c) for c in columns]
        if not columns or any(p is None for p in parts):
            return None
        return np.mean([normalised(c, p) for c, p in zip(columns, parts, strict=True)], axis=0)

    def average(self, key: RowKey, columns: tuple[str, ...]) -> Estimate | None:
        """The mean over ``columns`` (MME normalised) when the row has all of them, per seed."""
        if not columns or not all(self.has(key, c) for c in columns):
            return None
        values = [np.mean([normalised(c, r.columns[c]) for c in columns]) for r in self.runs(key)]
        return self.bootstrap.estimate(values, self.average_replicates(key, columns))

    def paired(self, a: RowKey, b: RowKey, column: str) -> bool | None:
        """Whether every run of the two rows was scored on the same units of ``column`` (None:
        not every run has per-question scores)."""
        runs = self.runs(a) + self.runs(b)
        if not runs or not all(column in r.samples for r in runs):
            return None
        return len({tuple(r.samples[column].ids) for r in runs}) == 1

    def difference(self, a: RowKey, b: RowKey, column: str) -> Estimate | None:
        """``a - b`` on ``column`` (``AVERAGE``: the average over the columns both rows have)."""
        if column == AVERAGE:
            raise ValueError("use average_difference for the average column")
        va, vb = self.value(a, column), self.value(b, column)
        if va is None or vb is None:
            return None
        return self.bootstrap.difference(
            va, vb, self.replicates(a, column), self.replicates(b, column), self.paired(a, b, column)
        )

    def average_difference(self, a: RowKey, b: RowKey, columns: tuple[str, ...]) -> Estimate | None:
        ea, eb = self.average(a, columns), self.average(b, columns)
        if ea is None or eb is None:
            return None
        pairing = [self.paired(a, b, c) for c in columns]
        paired = None if None in pairing else all(pairing)
        return self.bootstrap.difference(
            ea.value,
            eb.value,
            self.average_replicates(a, columns),
            self.average_replicates(b, columns),
            paired,
        )

    def chance(self, column: str) -> float | None:
        """The column's chance level, from the questions of any evaluated model."""
        for runs in self.rows.values():
            for r in runs:
                if column in r.samples and r.samples[column].chance is not None:
                    return r.samples[column].chance
        return None
