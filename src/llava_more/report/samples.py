"""Per-question scores of one evaluation, in the form the bootstrap resamples.

lmms-eval logs every document it scored (``--log_samples``: one ``*_samples_<task>.jsonl`` per task,
each line carrying what the task's ``process_results`` returned). A table column is not always a
mean over those lines: POPE's column is an F1 score, MME's is a sum over categories of
``acc + acc+`` per image (its two questions together), MMBench's counts a question right only when
all its circular variants are, SEED-All pools the image and video splits. So for each column we
keep the *units* the benchmark's own aggregation is built from and the few numbers per unit it
needs, plus one of three statistics that reproduce that aggregation as weighted sums:

- ``mean``: the mean of a per-unit value (accuracy, VQA accuracy, MMBench hit, MMMU correctness);
- ``f1``: ``2 TP / (2 TP + FP + FN)`` from per-question TP/FP/FN indicators (POPE);
- ``stratum_sum``: the sum over strata of the mean per-unit value (MME: categories of images).

Units carry a stratum where the benchmark's design fixes group sizes (SEED's image and video
questions, MME's categories); the bootstrap then resamples within each stratum.

``extract_columns`` turns lmms-eval's sample logs into ``{column: ColumnSamples}`` and checks that
each statistic, over all units, gives back the number lmms-eval reported; a column whose check fails
(a task whose logs we do not understand) is left out, so its cells get no interval rather than a
wrong one. ``llava-more evaluate`` stores the result in ``scores.json`` under ``"samples"``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llava_more.errors import UserError

log = logging.getLogger(__name__)

KINDS = ("mean", "f1", "stratum_sum")
# Tolerance of the check against lmms-eval's own number: relative, and absolute 1e-5 of the scale
# (MMMU rounds its accuracy to 5 decimals; the JSON keeps 6 per unit).
CHECK_TOLERANCE = 1e-5


@dataclass
class ColumnSamples:
    """One column's units: ids (to pair two models on the same questions), optional strata, and
    the per-unit features its statistic reads. ``chance`` is the column's value for a model that
    answers uniformly at random (None where unknown)."""

    kind: str
    ids: list[str]
    features: dict[str, np.ndarray]
    scale: float = 100.0
    strata: list[str] | None = None
    chance: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown statistic {self.kind!r}")
        self.features = {k: np.asarray(v, dtype=np.float64) for k, v in self.features.items()}
        n = len(self.ids)
        if any(len(v) != n for v in self.features.values()) or (
            self.strata is not None and len(self.strata) != n
        ):
            raise ValueError("every feature and the strata need one entry per unit")

    @property
    def n(self) -> int:
        return len(self.ids)

    def stratum_index(self) -> list[np.ndarray]:
        """Unit indices of each stratum (one stratum holding everything when there are none)."""
        if self.strata is None:
            return [np.arange(self.n)]
        groups: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(self.strata):
            groups[s].append(i)
        return [np.asarray(groups[s]) for s in sorted(groups)]

    def statistic(self, weights: np.ndarray) -> np.ndarray:
        """The column's value under each row of ``weights`` (replicates x units: how often each unit
        was drawn); all-ones weights give the value on the benchmark as run."""
        w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        features = {name: values[:, None] for name, values in self.features.items()}
        return batch_statistic(self.kind, self.scale, features, self.stratum_index(), w)[:, 0]

    def point(self) -> float:
        return float(self.statistic(np.ones(self.n))[0])

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "scale": self.scale, "ids": self.ids}
        if self.strata is not None:
            data["strata"] = self.strata
        if self.chance is not None:
            data["chance"] = round(self.chance, 6)
        data["features"] = {k: [_compact(x) for x in v.tolist()] for k, v in self.features.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ColumnSamples:
        return cls(
            kind=data["kind"],
            ids=[str(i) for i in data["ids"]],
            features=data["features"],
            scale=float(data.get("scale", 100.0)),
            strata=data.get("strata"),
            chance=data.get("chance"),
        )


def batch_statistic(
    kind: str, scale: float, features: dict[str, np.ndarray], strata: list[np.ndarray], weights: np.ndarray
) -> np.ndarray:
    """``ColumnSamples.statistic`` for several models at once: ``features`` holds each feature as a
    units x models matrix (models scored on the same units), ``weights`` is replicates x units; the
    result is replicates x models. One matrix product per feature serves every model."""
    if kind == "mean":
        total = weights.sum(axis=1, keepdims=True)
        value = (weights @ features["x"]) / np.where(total > 0, total, 1)
    elif kind == "f1":
        tp, fp, fn = (weights @ features[name] for name in ("tp", "fp", "fn"))
        denominator = 2 * tp + fp + fn
        value = np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), 0.0)
    else:  # stratum_sum
        value = np.zeros((weights.shape[0], features["x"].shape[1]))
        for index in strata:
            part = weights[:, index]
            value += (part @ features["x"][index]) / np.maximum(part.sum(axis=1, keepdims=True), 1)
    return value * scale


def _compact(x: float) -> float | int:
    return int(x) if float(x).is_integer() else round(x, 6)


def load_columns(raw: dict[str, Any] | None, where: str) -> dict[str, ColumnSamples]:
    """The ``"samples"`` section of a ``scores.json`` (absent in older files: no intervals)."""
    if not raw:
        return {}
    try:
        return {column: ColumnSamples.from_json(data) for column, data in raw.items()}
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(
            f"{where}: its per-sample scores are unreadable ({err}); re-run the evaluation"
        ) from None


# --------------------------------------------------------------------------- from lmms-eval's logs

_OPTION_LINE = re.compile(r"^\(?([A-J])[.)]\s", re.MULTILINE)


def count_options(prompt: str) -> int:
    """Lettered options listed in a prompt ("A. red" lines, as lmms-eval's multiple-choice tasks
    write them); 0 for an open question."""
    letters = _OPTION_LINE.findall(prompt or "")
    count = 0
    for letter in letters:
        if letter == chr(ord("A") + count):
            count += 1
    return count


def _guess_chance(options: Iterable[int]) -> float:
    """Expected accuracy of a uniform random letter (0 for open questions)."""
    options = list(options)
    return float(np.mean([1.0 / k if k else 0.0 for k in options])) if options else 0.0


def read_sample_logs(raw_dir: Path, task: str) -> list[dict[str, Any]]:
    """lmms-eval's logged samples of ``task`` (every line of its ``*_samples_<task>.jsonl``), by doc id."""
    records = []
    for path in sorted(Path(raw_dir).rglob(f"*_samples_{task}.jsonl")):
        with open(path, encoding="utf-8") as f:
            records += [json.loads(line) for line in f if line.strip()]
    return sorted(records, key=lambda r: r.get("doc_id", 0))


def _mean_column(records, value: Callable[[dict], float], *, strata=None, scale=100.0) -> ColumnSamples:
    return ColumnSamples(
        "mean",
        ids=[str(r["doc_id"]) for r in records],
        features={"x": [value(r) for r in records]},
        scale=scale,
        strata=[strata(r) for r in records] if strata else None,
        chance=_guess_chance(count_options(r.get("input", "")) for r in records) * scale,
    )


def _exact_match(records, key: str, task: str) -> ColumnSamples:
    return _mean_column(records, lambda r: float(r[key]))


def _pope(records, key: str, task: str) -> ColumnSamples:
    tp, fp, fn, truths = [], [], [], []
    for r in records:
        pred, truth = r[key]["prediction"], r[key]["ground_truth"]
        tp.append(float(truth == "yes" and pred == "yes"))
        fp.append(float(truth == "no" and pred == "yes"))
        fn.append(float(truth == "yes" and pred == "no"))
        truths.append(truth)
    # A fair coin: TP = P/2, FP = N/2, FN = P/2.
    positives, negatives = truths.count("yes"), truths.count("no")
    chance = positives / (1.5 * positives + 0.5 * negatives) if positives else 0.0
    return ColumnSamples(
        "f1",
        ids=[str(r["doc_id"]) for r in records],
        features={"tp": tp, "fp": fp, "fn": fn},
        chance=chance * 100,
    )


def _mme(records, key: str, task: str) -> ColumnSamples:
    """Units are MME's images (both questions of one ``question_id``), strata its categories."""
    units: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in records:
        if key in r:
            units[(r[key]["category"], r[key]["question_id"])].append(float(r[key]["score"]))
    ordered = sorted(units)
    # Per image: acc (share of its questions right) + acc+ (both right), each in percent.
    x = [100.0 * sum(units[u]) / len(units[u]) + 100.0 * (sum(units[u]) == 2) for u in ordered]
    categories = sorted({c for c, _ in ordered})
    chance = sum(50.0 + 25.0 for _ in categories)  # a fair coin per question, two per image
    return ColumnSamples(
        "stratum_sum",
        ids=[f"{c}/{q}" for c, q in ordered],
        features={"x": x},
        scale=1.0,
        strata=[c for c, _ in ordered],
        chance=chance,
    )


def _seed(records, key: str, task: str) -> ColumnSamples:
    chosen = [r for r in records if key in r]

    def correct(r: dict) -> float:
        return float(r[key]["pred"].lower().strip() == r[key]["answer"].lower().strip())

    split = (lambda r: "video" if "seed_video" in r else "image") if key == "seed_all" else None
    return _mean_column(chosen, correct, strata=split)


def _mmmu(records, key: str, task: str) -> ColumnSamples:
    from lmms_eval.tasks.mmmu.utils import evaluate_mmmu

    return _mean_column(records, lambda r: float(evaluate_mmmu([r[key]])[1]["acc"]))


def _mmbench(records, key: str, task: str) -> ColumnSamples:
    """Units are MMBench's questions: a question counts only when all its circular variants (index
    + k * 1e6) are answered right, judged by lmms-eval's own offline matcher."""
    import pandas as pd

    from llava_more.eval.mmbench_rules import evaluator_for

    items = [r[key] for r in records]
    language = "cn" if "cn" in task.split("_") else "en"
    prompts = {int(r[key]["index"]): r.get("input", "") for r in records}
    evaluator = evaluator_for(language)
    data = pd.DataFrame(items).sort_values(by="index")
    data["prediction"] = [str(x) for x in data["prediction"]]
    for name in list(data.keys()):
        data[name.lower() if name not in "ABCD" else name] = data.pop(name)
    answers = dict(zip(data["index"], data["answer"], strict=True))
    main = sorted(int(i) for i in data["index"] if i < int(1e6))
    hits, chances = [], []
    for index in main:
        variants = data[data["index"] % int(1e6) == index]
        hits.append(float(evaluator.eval_sub_data(variants, answers, static_only=True)))
        k = count_options(prompts.get(index, ""))
        chances.append((1.0 / k) ** len(variants) if k else 0.0)
    return ColumnSamples(
        "mean",
        ids=[str(i) for i in main],
        features={"x": hits},
        chance=float(np.mean(chances)) * 100 if main else None,
    )


# metric name (before the ",<filter>") -> how to build its column from the task's logged samples
_EXTRACTORS: dict[str, Callable[[list[dict], str, str], ColumnSamples]] = {
    "exact_match": _exact_match,
    "pope_f1_score": _pope,
    "mme_perception_score": _mme,
    "mme_cognition_score": _mme,
    "seed_all": _seed,
    "seed_image": _seed,
    "seed_video": _seed,
    "mmmu_acc": _mmmu,
    "gpt_eval_score": _mmbench,
}


@dataclass
class ExtractionReport:
    """What ``extract_columns`` kept and why it left a column out."""

    columns: dict[str, ColumnSamples] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def extract_columns(benches: list, raw_dir: str | Path, reported: dict[str, float]) -> ExtractionReport:
    """Per-unit scores of every column of ``benches`` (``eval.benchmarks.Benchmark``) from the sample
    logs in ``raw_dir``, each checked against ``reported`` (column -> lmms-eval's value, paper units)."""
    out = ExtractionReport()
    for bench in benches:
        records = read_sample_logs(Path(raw_dir), bench.task)
        for column, spec in bench.columns.items():
            metric = spec.metric.split(",")[0]
            extractor = _EXTRACTORS.get(metric)
            if extractor is None or not records:
                out.skipped[column] = (
                    f"no per-sample form for metric {metric!r}" if records else "no logged samples"
                )
                continue
            if bench.needs_env:
                out.skipped[column] = "judged by an external model: per-question verdicts are not logged"
                continue
            try:
                samples = extractor(records, metric, bench.task)
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                out.skipped[column] = f"unexpected sample record ({type(err).__name__}: {err})"
                continue
            if not samples.n:
                out.skipped[column] = "no units"
                continue
            point, expected = samples.point(), reported.get(column)
            if expected is None or not math.isclose(
                point, expected, rel_tol=CHECK_TOLERANCE, abs_tol=1e-5 * samples.scale
            ):
                out.skipped[column] = (
                    f"per-sample value {point:.6g} does not reproduce lmms-eval's {expected}"
                )
                continue
            out.columns[column] = samples
    for column, why in out.skipped.items():
        log.warning("%s: no confidence interval (%s)", column, why)
    return out
