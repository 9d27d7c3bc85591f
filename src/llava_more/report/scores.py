"""One evaluated model's ``scores.json`` (written by ``llava-more evaluate``) as the report reads it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from llava_more.errors import UserError
from llava_more.eval.benchmarks import COLUMNS
from llava_more.report.layout import RowKey
from llava_more.report.samples import ColumnSamples, load_columns


@dataclass(frozen=True)
class ExperimentScores:
    """One evaluated model: an experiment at a training stage (and seed), its column values, the
    flags on them and, where the evaluation logged them, its per-question scores."""

    experiment_id: str
    columns: dict[str, float]
    flags: dict[str, dict[str, float]] = field(default_factory=dict)
    stage: int = 2
    llm: str | None = None
    vision: str | None = None
    s2: bool = False
    pretrain: str | None = None
    seed: int | None = None
    samples: dict[str, ColumnSamples] = field(default_factory=dict, compare=False, repr=False)

    @property
    def key(self) -> RowKey:
        if self.llm is None or self.vision is None or self.pretrain is None:
            raise ValueError(f"{self.experiment_id}: scores without the experiment's settings")
        return RowKey(self.llm, self.vision, self.s2, self.pretrain, self.stage)

    @property
    def label(self) -> str:
        return self.experiment_id if self.stage == 2 else f"{self.experiment_id} (stage {self.stage} only)"

    def flag(self, column: str) -> float | None:
        """The share of unreadable answers behind a flagged column (None: nothing to mark)."""
        values = [v for v in self.flags.get(column, {}).values() if v]
        return max(values) if values else None


def load_scores(
    path: str | Path,
    experiment_id: str,
    *,
    stage: int = 2,
    seed: int | None = None,
    **experiment: object,
) -> ExperimentScores:
    """Read a ``scores.json`` written by ``run_lmms_eval``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no scores for {experiment_id} (stage {stage}); run its evaluation first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        columns = {k: float(v) for k, v in data["columns"].items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise UserError(
            f"{path}: not a scores.json from `llava-more evaluate` ({err}); re-run the evaluation"
        ) from None
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise UserError(f"{path}: unknown column(s) {', '.join(unknown)}; known: {', '.join(COLUMNS)}")
    samples = load_columns(data.get("samples"), str(path))
    return ExperimentScores(
        experiment_id,
        columns,
        data.get("flags", {}),
        stage,
        seed=seed,
        samples={c: s for c, s in samples.items() if c in columns},
        **experiment,  # type: ignore[arg-type]
    )
