"""Bootstrap replicates of table cells: 95% intervals for a cell, a difference of two rows, an average.

A replicate redraws a benchmark's units (questions; MME's images, MMBench's circular questions)
with replacement, within each stratum, and recomputes the column with the benchmark's own
aggregation (``samples.ColumnSamples.statistic``). The draws of a column depend only on the seed,
the column and its unit ids, so:

- two models evaluated on the same questions see the *same* draws: their difference is a paired
  bootstrap (``paired`` says whether the ids matched; if not the draws are independent);
- a report is reproducible from its seed;
- the average over columns combines replicate ``b`` of every column.

An experiment trained with several seeds is one row: each replicate also redraws its seeds (with
replacement) and takes their mean, so the interval carries both the question noise and the
seed-to-seed noise (a two-level bootstrap; with a single seed it is the plain question bootstrap).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from llava_more.report.samples import ColumnSamples, batch_statistic

DEFAULT_REPLICATES = 2000
MIN_REPLICATES = 100
DEFAULT_LEVEL = 0.95
_CHUNK = 256  # replicates per matrix product (bounds the float copy of the draw counts)


def _stable_seed(*parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def draw_counts(
    strata: list[np.ndarray], n_units: int, replicates: int, rng: np.random.Generator
) -> np.ndarray:
    """How often each unit is drawn in each replicate (replicates x units): every stratum redrawn
    with replacement to its own size."""
    counts = np.zeros((replicates, n_units), dtype=np.float64)
    offsets = (np.arange(replicates) * n_units)[:, None]
    for index in strata:
        picks = index[rng.integers(0, len(index), size=(replicates, len(index)))]
        counts += np.bincount((picks + offsets).ravel(), minlength=replicates * n_units).reshape(
            replicates, n_units
        )
    return counts


def interval(values: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap ``values``."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(np.asarray(values, dtype=np.float64), [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Estimate:
    """A value with its bootstrap interval (``low``/``high`` None: no per-sample scores)."""

    value: float
    low: float | None = None
    high: float | None = None
    spread: float | None = None  # standard deviation over training seeds (None: one seed)
    seeds: int = 1
    paired: bool | None = None  # differences only: the two rows shared their questions

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None

    def excludes_zero(self) -> bool:
        return self.has_interval and (self.low > 0 or self.high < 0)  # type: ignore[operator]


class Bootstrap:
    """Replicates of every (evaluated model, column), computed column by column and kept.

    ``prepare(column, samples)`` draws the column's replicates for every model at once (models
    evaluated on the same units share one set of draws); ``row_replicates`` then combines a row's
    seed runs.
    """

    def __init__(self, replicates: int = DEFAULT_REPLICATES, seed: int = 0, level: float = DEFAULT_LEVEL):
        if replicates < MIN_REPLICATES:
            raise ValueError("at least 100 bootstrap replicates are needed for a 95% interval")
        self.n = replicates
        self.seed = seed
        self.level = level
        # id(samples) -> (samples, replicates): the object is kept so its id stays unique
        self._done: dict[tuple[int, str], tuple[ColumnSamples, np.ndarray]] = {}

    def prepare(self, column: str, samples: list[ColumnSamples]) -> None:
        """Draw the replicates of ``column`` for each of ``samples`` (one per evaluated model)."""
        groups: dict[tuple, list[ColumnSamples]] = {}
        for s in samples:
            if (id(s), column) not in self._done:
                groups.setdefault((tuple(s.ids), tuple(s.strata or ())), []).append(s)
        for members in groups.values():
            first = members[0]
            rng = np.random.default_rng(_stable_seed(self.seed, column, first.ids, first.strata))
            strata = first.stratum_index()
            # Every model on these units, as one units x models matrix per feature.
            by_kind: dict[tuple[str, float], list[int]] = {}
            for i, member in enumerate(members):
                by_kind.setdefault((member.kind, member.scale), []).append(i)
            stacked = {
                key: {
                    name: np.stack([members[i].features[name] for i in idx], axis=1)
                    for name in members[idx[0]].features
                }
                for key, idx in by_kind.items()
            }
            out = np.empty((self.n, len(members)))
            for start in range(0, self.n, _CHUNK):
                counts = draw_counts(strata, first.n, min(_CHUNK, self.n - start), rng)
                for (kind, scale), idx in by_kind.items():
                    values = batch_statistic(kind, scale, stacked[(kind, scale)], strata, counts)
                    out[start : start + len(counts), idx] = values
            for i, member in enumerate(members):
                self._done[(id(member), column)] = (member, out[:, i])

    def run_replicates(self, column: str, samples: ColumnSamples) -> np.ndarray:
        """The column's value in each replicate for one evaluated model."""
        if (id(samples), column) not in self._done:
            self.prepare(column, [samples])
        return self._done[(id(samples), column)][1]

    def seed_draws(self, row_key: object, n_seeds: int) -> np.ndarray:
        """Which seed runs each replicate averages (replicates x seeds); the same for every column of a row."""
        if n_seeds == 1:
            return np.zeros((self.n, 1), dtype=np.int64)
        rng = np.random.default_rng(_stable_seed(self.seed, "seeds", row_key))
        return rng.integers(0, n_seeds, size=(self.n, n_seeds))

    def row_replicates(self, row_key: object, column: str, runs: list[ColumnSamples]) -> np.ndarray:
        """A row's replicates: per replicate, the mean over redrawn seeds of each seed's value."""
        per_seed = np.stack([self.run_replicates(column, s) for s in runs])  # seeds x B
        draws = self.seed_draws(row_key, len(runs))
        return per_seed[draws, np.arange(self.n)[:, None]].mean(axis=1)

    def estimate(self, values: list[float], replicates: np.ndarray | None) -> Estimate:
        """A cell: the mean over seeds of the reported values, the interval from the replicates."""
        value = float(np.mean(values))
        spread = float(np.std(values, ddof=1)) if len(values) > 1 else None
        if replicates is None:
            return Estimate(value, spread=spread, seeds=len(values))
        low, high = interval(replicates, self.level)
        return Estimate(value, low, high, spread, len(values))

    def difference(
        self, a: float, b: float, rep_a: np.ndarray | None, rep_b: np.ndarray | None, paired: bool | None
    ) -> Estimate:
        """``a - b`` with the interval of the replicate differences (paired where the draws matched)."""
        if rep_a is None or rep_b is None:
            return Estimate(a - b, paired=paired)
        low, high = interval(rep_a - rep_b, self.level)
        return Estimate(a - b, low, high, paired=paired)
