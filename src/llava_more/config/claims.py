"""A study's ``findings``: the paper's conclusions written as claims the report can check.

A claim says that some rows beat others on some benchmark columns::

    findings:
      - claim: SigLIP2 beats CLIP with Phi-4-mini on TextVQA
        better: {vision: siglip2-so400m-384}      # the rows claimed better ...
        than: {vision: clip-l-336}                # ... than these, otherwise the same settings
        where: {llm: phi4-mini, s2: false}        # which rows the claim is about (optional)
        columns: [TextVQA]                        # optional: every column; "Avg": the average
        holds_for: all                            # all | most | any of the comparisons (default all)

Each row matching ``where`` and ``better`` is compared with every row matching ``where`` and ``than``
that has the same value of every other setting; each such pair on each column is one comparison.
Settings are an experiment's ``llm``, ``vision``, ``s2``, ``pretrain`` (a value or a list) and
``stage`` (2, the default; 1 is the stage-1 model, evaluated for ``eval_untrained`` experiments).
``parse_findings`` validates a study's list; ``comparisons`` lists a claim's pairs of rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llava_more.config.checks import check_keys
from llava_more.errors import ConfigError
from llava_more.eval.benchmarks import AVERAGE

SETTINGS = ("llm", "vision", "s2", "pretrain", "stage")
QUANTIFIERS = ("all", "most", "any")
CLAIM_KEYS = ("claim", "better", "than", "where", "columns", "holds_for")


@dataclass(frozen=True)
class Claim:
    text: str
    better: tuple[tuple[str, tuple[Any, ...]], ...]  # setting -> allowed values
    than: tuple[tuple[str, tuple[Any, ...]], ...]
    where: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    columns: tuple[str, ...] = ()  # empty: every benchmark column of the study
    holds_for: str = "all"

    @property
    def varied(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(k for k, _ in self.better + self.than))

    def needed(self, comparisons: int) -> int:
        """How many comparisons must show the claim for it to hold."""
        return {"all": comparisons, "most": comparisons // 2 + 1, "any": 1}[self.holds_for]


def study_rows(experiments: tuple, untrained: tuple[str, ...]) -> list[dict[str, Any]]:
    """The rows a study's report has (``schema.Experiment`` at stage 2, and stage 1 for the
    ``eval_untrained`` ones), as mappings of every setting; a seed's runs are one row."""
    rows: list[dict[str, Any]] = []
    for stage, members in ((2, experiments), (1, [e for e in experiments if e.id in untrained])):
        for exp in members:
            row = {
                "llm": exp.llm,
                "vision": exp.vision,
                "s2": exp.s2,
                "pretrain": exp.pretrain,
                "stage": stage,
            }
            if row not in rows:
                rows.append(row)
    return rows


def _matches(row: Mapping[str, Any], flt: tuple[tuple[str, tuple[Any, ...]], ...]) -> bool:
    return all(row[key] in values for key, values in flt)


def comparisons(
    claim: Claim, rows: list[Mapping[str, Any]]
) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """(better, worse) pairs of ``rows`` (mappings of every setting) the claim compares, in row order."""
    same = [k for k in SETTINGS if k not in claim.varied]
    pairs = []
    for better in rows:
        if not (_matches(better, claim.where) and _matches(better, claim.better)):
            continue
        for worse in rows:
            if worse is better or not (_matches(worse, claim.where) and _matches(worse, claim.than)):
                continue
            if all(worse[k] == better[k] for k in same) and (better, worse) not in pairs:
                pairs.append((better, worse))
    return pairs


def _filter(raw: Any, where: str, rows: list[Mapping[str, Any]]) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if raw is None:
        return ()
    out = []
    for key, value in check_keys(raw, where, SETTINGS).items():
        values = tuple(value) if isinstance(value, list) else (value,)
        known = {row[key] for row in rows}
        for v in values:
            if v not in known:
                choices = ", ".join(sorted(map(str, known)))
                raise ConfigError(f"{where}.{key}: {v!r} is not a {key} of the study's rows ({choices})")
        out.append((key, values))
    return tuple(out)


def parse_claim(raw: Any, where: str, rows: list[Mapping[str, Any]], columns: tuple[str, ...]) -> Claim:
    """One claim of ``studies.<name>.findings``; ``rows`` are the study's rows (every setting, stage
    included), ``columns`` the benchmark columns its benchmarks fill."""
    raw = check_keys(raw, where, CLAIM_KEYS, ("claim", "better", "than"))
    if not isinstance(raw["claim"], str) or not raw["claim"].strip():
        raise ConfigError(f"{where}.claim: expected the claim as a sentence")
    better = _filter(raw["better"], f"{where}.better", rows)
    than = _filter(raw["than"], f"{where}.than", rows)
    if not better or {k for k, _ in better} != {k for k, _ in than}:
        raise ConfigError(
            f"{where}: `better` and `than` must set the same settings (they say what the compared rows differ in)"
        )
    chosen = raw.get("columns") or []
    if not isinstance(chosen, list) or not all(isinstance(c, str) for c in chosen):
        raise ConfigError(f"{where}.columns: expected a list of columns")
    known = (*columns, AVERAGE)
    for column in chosen:
        if column not in known:
            raise ConfigError(
                f"{where}.columns: {column!r} is not a column of the study ({', '.join(known)})"
            )
    holds_for = raw.get("holds_for", "all")
    if holds_for not in QUANTIFIERS:
        raise ConfigError(f"{where}.holds_for: {holds_for!r} is not one of {', '.join(QUANTIFIERS)}")
    claim = Claim(raw["claim"].strip(), better, than, _filter(raw.get("where"), f"{where}.where", rows),
                  tuple(chosen), holds_for)  # fmt: skip
    if not comparisons(claim, rows):
        raise ConfigError(
            f"{where}: no row matches `better` with a partner matching `than` in the other settings; "
            "the study has nothing to check this claim on"
        )
    return claim


def parse_findings(
    raw: Any, where: str, rows: list[Mapping[str, Any]], columns: tuple[str, ...]
) -> tuple[Claim, ...]:
    """``studies.<name>.findings``: a list of claims (absent: none)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: expected a list of claims")
    return tuple(parse_claim(item, f"{where}[{i}]", rows, columns) for i, item in enumerate(raw))
