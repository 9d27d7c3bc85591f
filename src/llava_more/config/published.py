"""Studies of published checkpoints (``kind: published``): calibrate the evaluation before training.

Each experiment names a released checkpoint (a Hugging Face Hub id or a local folder) instead of a
training recipe; nothing is trained. The checkpoint is imported as a bundle (``llava-more
import-model``) and evaluated like a trained model, so a lab can see which of the paper's numbers its
own evaluation reproduces. ``llm``, ``vision``, ``s2`` and ``pretrain`` say what the checkpoint is:
they give it the experiment id of the paper study's twin (``llama3.1-8b_clip-l-336_lcs``), so the
same table filters, paper rows and deltas apply; the import checks them against the checkpoint.

    studies.<name>:
      kind: published
      size: real                 # real checkpoints (tiny for test twins)
      benchmarks: real
      eval_samples: null
      pretrain: lcs              # the pre-training data the checkpoints were aligned on (a label)
      experiments:
        - {llm: llama3.1-8b, vision: clip-l-336, checkpoint: owner/finetuned, stage1_checkpoint: owner/pretrain}
      tables: {...}              # as a training study's

``stage1_checkpoint`` (optional) is the experiment's pretrain-only release: it is imported on the
LLM's base checkpoint and evaluated as the experiment's stage-1 model.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from llava_more.config.checks import check_keys, choice, typed, where
from llava_more.config.schema import (
    SIZES,
    TABLE_NAMES,
    DataSource,
    Experiment,
    Study,
    _check_backbones,
    _table_rows,
)
from llava_more.errors import ConfigError

PUBLISHED_STUDY_KEYS = ("kind", "size", "benchmarks", "eval_samples", "experiments", "tables", "pretrain")
PUBLISHED_EXPERIMENT_KEYS = ("llm", "vision", "s2", "pretrain", "checkpoint", "stage1_checkpoint")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _checkpoint(value: Any, path: str, base_dir: Path) -> str:
    """A Hub id (``owner/name``) or an existing folder (relative to params.yaml)."""
    text = typed(value, str, path)
    folder = Path(text) if Path(text).is_absolute() else base_dir / text
    if folder.is_dir() or (_HUB_ID.fullmatch(text) and not Path(text).is_absolute()):
        return text
    raise ConfigError(
        f"{path}: {text!r} is neither a checkpoint folder (looked for {folder}) nor a Hub id (owner/name)"
    )


def _experiment(raw: Any, path: str, pretrain: dict[str, DataSource], default_pretrain: str | None,
                base_dir: Path, block: int) -> Experiment:  # fmt: skip
    raw = check_keys(raw, path, PUBLISHED_EXPERIMENT_KEYS, ("llm", "vision", "checkpoint"))
    for key in ("llm", "vision", "pretrain"):
        if isinstance(raw.get(key), list):
            raise ConfigError(
                f"{where(path, key)}: one checkpoint is one model; give a single value, not a list"
            )
    label = raw.get("pretrain", default_pretrain)
    if label is None:
        raise ConfigError(f"{where(path, 'pretrain')}: required (no study-level default)")
    label = choice(typed(label, str, where(path, "pretrain")), tuple(pretrain), where(path, "pretrain"))
    stage1 = raw.get("stage1_checkpoint")
    return Experiment(
        llm=typed(raw["llm"], str, where(path, "llm")),
        vision=typed(raw["vision"], str, where(path, "vision")),
        s2=typed(raw.get("s2", False), bool, where(path, "s2")),
        pretrain=label,
        block=block,
        checkpoint=_checkpoint(raw["checkpoint"], where(path, "checkpoint"), base_dir),
        stage1_checkpoint=None
        if stage1 is None
        else _checkpoint(stage1, where(path, "stage1_checkpoint"), base_dir),
    )


def parse_published_study(
    name: str,
    body: Any,
    pretrain: dict[str, DataSource],
    suites: dict[str, Any],
    check_backbones: bool,
    base_dir: Path,
) -> Study:
    """The ``Study`` of a ``kind: published`` block: experiments from checkpoints, no protocol or data."""
    path = f"studies.{name}"
    body = check_keys(body, path, PUBLISHED_STUDY_KEYS, ("kind", "size", "benchmarks", "experiments"))
    size = choice(body["size"], SIZES, f"{path}.size")
    suite = choice(body["benchmarks"], tuple(suites), f"{path}.benchmarks")
    samples = body.get("eval_samples")
    if samples is not None and typed(samples, int, f"{path}.eval_samples") <= 0:
        raise ConfigError(f"{path}.eval_samples: must be positive or null (all samples)")
    blocks = body["experiments"]
    if not isinstance(blocks, list) or not blocks:
        raise ConfigError(f"{path}.experiments: expected a non-empty list of checkpoints")
    experiments: list[Experiment] = []
    for i, raw in enumerate(blocks):
        at = f"{path}.experiments[{i}]"
        exp = _experiment(raw, at, pretrain, body.get("pretrain"), base_dir, i)
        if check_backbones:
            _check_backbones(exp, size, at)
        if any(e.id == exp.id for e in experiments):
            raise ConfigError(f"{at}: a second checkpoint for {exp.id}; each model appears once in a study")
        experiments.append(exp)
    experiments_t = tuple(experiments)
    tables_raw = check_keys(body.get("tables") or {}, f"{path}.tables", TABLE_NAMES)
    tables = {t: _table_rows(t, f, f"{path}.tables.{t}", experiments_t) for t, f in tables_raw.items()}
    return Study(
        name=name,
        size=size,
        protocol="",
        instruct="",
        benchmarks=suites[suite].tasks,
        benchmark_suite=suite,
        eval_samples=samples,
        eval_untrained=tuple(e.id for e in experiments_t if e.stage1_checkpoint),
        experiments=experiments_t,
        tables=tables,
        kind="published",
    )


def published_bundles(study: Study) -> list[tuple[int, str]]:
    """(stage, experiment id) of every bundle a published study imports: each checkpoint as stage 2,
    each pretrain-only release as stage 1."""
    return [(2, e.id) for e in study.experiments] + [(1, exp_id) for exp_id in study.eval_untrained]


def checkpoint_of(study: Study, stage: int, exp_id: str) -> str:
    """The release a published study imports as ``stage`` of ``exp_id``."""
    exp = study.experiment(exp_id)
    source = exp.checkpoint if stage == 2 else exp.stage1_checkpoint
    if source is None:
        raise ConfigError(f"study {study.name!r}: experiment {exp_id} has no stage-{stage} checkpoint")
    return source
