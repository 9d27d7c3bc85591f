"""The study's claims (``config.claims``) checked against its numbers: ``findings.md``.

Every comparison of a claim (a better row, a worse row, a column) is the paired bootstrap interval
of ``better - worse``: it *shows* the claim when the whole interval is above zero, *contradicts* it
when the whole interval is below zero, and is *inconclusive* otherwise (or without per-question
scores, which leave the difference without an interval). A claim needing ``k`` of its ``n``
comparisons (all: n, most: more than half, any: one):

- **holds** when at least ``k`` comparisons show it;
- **does not hold** when even counting every inconclusive comparison fewer than ``k`` could;
- is **within noise** otherwise, once every comparison has its numbers;
- is **not checked** while the verdict still depends on comparisons whose rows were not evaluated.

A comparison not evaluated yet counts as inconclusive: a claim can already hold, or already fail,
before every row is in.

With ``with_paper`` (real-size and published studies) each comparison also carries the paper's own
difference, where both rows are published.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llava_more.config.claims import Claim, comparisons
from llava_more.eval.benchmarks import AVERAGE, COLUMNS
from llava_more.report.bootstrap import Estimate
from llava_more.report.formats import difference_text, number
from llava_more.report.layout import TABLES, RowKey, describe, paper_row
from llava_more.report.reference import PaperResults
from llava_more.report.results import StudyResults, normalised

HOLDS, FAILS, NOISE, UNCHECKED = "holds", "does not hold", "within noise", "not checked"
SHOWS, CONTRADICTS, INCONCLUSIVE, NOT_EVALUATED = (
    "shows it",
    "contradicts it",
    "inconclusive",
    "not evaluated",
)


@dataclass
class Comparison:
    better: RowKey
    worse: RowKey
    column: str
    difference: Estimate | None  # None: a row has no scores in this column (yet)
    paper: float | None = None  # the paper's own difference, where both rows are published

    @property
    def outcome(self) -> str:
        d = self.difference
        if d is None:
            return NOT_EVALUATED
        if not d.has_interval:
            return INCONCLUSIVE
        if d.low > 0:  # type: ignore[operator]
            return SHOWS
        if d.high < 0:  # type: ignore[operator]
            return CONTRADICTS
        return INCONCLUSIVE


@dataclass
class Finding:
    claim: Claim
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def needed(self) -> int:
        return self.claim.needed(len(self.comparisons))

    def count(self, outcome: str) -> int:
        return sum(c.outcome == outcome for c in self.comparisons)

    @property
    def verdict(self) -> str:
        if self.count(NOT_EVALUATED) == len(self.comparisons):
            return UNCHECKED  # none of its comparisons has numbers yet
        # A comparison not evaluated yet could still go either way.
        shows = self.count(SHOWS)
        open_ = self.count(INCONCLUSIVE) + self.count(NOT_EVALUATED)
        if shows + open_ < self.needed:
            return FAILS
        if shows >= self.needed:
            return HOLDS
        return UNCHECKED if self.count(NOT_EVALUATED) else NOISE


def _row(settings) -> RowKey:
    return RowKey(
        settings["llm"], settings["vision"], settings["s2"], settings["pretrain"], settings["stage"]
    )


def _paper_difference(
    reference: PaperResults | None, a: RowKey, b: RowKey, columns: tuple[str, ...], column: str
):
    if reference is None:
        return None
    for table in TABLES:
        ka, kb = paper_row(table, a), paper_row(table, b)
        if ka is None or kb is None:
            continue
        va, vb = reference.values(ka), reference.values(kb)
        if column == AVERAGE:
            if all(c in va and c in vb for c in columns):
                return sum(normalised(c, va[c]) - normalised(c, vb[c]) for c in columns) / len(columns)
        elif column in va and column in vb:
            return va[column] - vb[column]
    return None


def check_claims(
    claims: tuple[Claim, ...],
    results: StudyResults,
    reference: PaperResults | None = None,
    with_paper: bool = False,
    rows: list[dict] | None = None,
    columns: tuple[str, ...] | None = None,
) -> list[Finding]:
    """Each claim with its comparisons among ``rows`` (``config.claims.study_rows``: the study's
    rows, evaluated or not; default: the rows ``results`` has), on the claim's columns (default:
    ``columns``, the study's benchmark columns, else those ``results`` has)."""
    if rows is None:
        rows = [
            {"llm": k.llm, "vision": k.vision, "s2": k.s2, "pretrain": k.pretrain, "stage": k.stage}
            for k in results.rows
        ]
    studied = columns if columns is not None else tuple(_column_order(results.columns()))
    findings = []
    for claim in claims:
        finding = Finding(claim)
        for better, worse in comparisons(claim, rows):
            a, b = _row(better), _row(worse)
            both = tuple(c for c in studied if results.has(a, c) and results.has(b, c))
            for column in claim.columns or studied:
                if column == AVERAGE:
                    diff = results.average_difference(a, b, both) if both else None
                else:
                    diff = results.difference(a, b, column)
                paper = _paper_difference(reference, a, b, both or studied, column) if with_paper else None
                finding.comparisons.append(Comparison(a, b, column, diff, paper))
        findings.append(finding)
    return findings


def _column_order(columns: set[str]) -> list[str]:
    return [c for c in COLUMNS if c in columns]


def row_label(key: RowKey) -> str:
    text = describe(key)
    return text if key.stage == 2 else f"{text} (stage 1)"


def summary(finding: Finding) -> str:
    n = len(finding.comparisons)
    parts = [f"{finding.count(SHOWS)} of {n} comparisons show it"]
    if finding.count(CONTRADICTS):
        parts.append(f"{finding.count(CONTRADICTS)} contradict it")
    if finding.count(NOT_EVALUATED):
        parts.append(f"{finding.count(NOT_EVALUATED)} not evaluated")
    need = {"all": "all", "most": f"more than half ({finding.needed})", "any": "one"}[finding.claim.holds_for]
    text = ", ".join(parts) + f"; it needs {need}"
    published = [c.paper for c in finding.comparisons if c.paper is not None]
    if published:
        text += f"; in the paper's numbers {sum(p > 0 for p in published)} of {len(published)} point this way"
    return text


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def as_json(findings: list[Finding], study: str) -> dict:
    """The findings for programs: each claim's verdict and the numbers of every comparison."""
    claims = []
    for f in findings:
        comparisons = []
        for c in f.comparisons:
            d = c.difference
            comparisons.append({
                "better": row_label(c.better), "worse": row_label(c.worse), "column": c.column,
                "difference": _round(d.value) if d else None, "low": _round(d.low) if d else None,
                "high": _round(d.high) if d else None, "paired": d.paired if d else None,
                "outcome": c.outcome, "paper": _round(c.paper),
            })  # fmt: skip
        claims.append({"claim": f.claim.text, "holds_for": f.claim.holds_for, "needed": f.needed,
                       "verdict": f.verdict, "comparisons": comparisons})  # fmt: skip
    return {"study": study, "claims": claims}


def markdown(findings: list[Finding], study: str, with_paper: bool = False) -> str:
    lines = [f"# Findings of study `{study}`", ""]
    if not findings:
        return "\n".join(lines + ["The study lists no claims (`findings:` in params.yaml).", ""])
    lines += [
        "Each claim is checked on the 95% paired bootstrap interval of each difference (better − worse): a "
        "comparison shows the claim when its interval is above zero, contradicts it when it is below zero, and "
        "is inconclusive otherwise. A claim **holds** when enough comparisons show it, **does not hold** when "
        "not enough could even if every inconclusive one did, and is **within noise** otherwise.",
        "",
        "| # | Claim | Verdict | Evidence |",
        "|---:|---|---|---|",
    ]
    for i, finding in enumerate(findings, 1):
        lines.append(f"| {i} | {finding.claim.text} | **{finding.verdict}** | {summary(finding)} |")
    for i, finding in enumerate(findings, 1):
        lines += ["", f"## {i}. {finding.claim.text}: {finding.verdict}", "", summary(finding) + ".", ""]
        header = ["Better", "Than", "Column", "Difference [95% CI]", "Outcome"] + (
            ["Paper"] if with_paper else []
        )
        lines += [
            "| " + " | ".join(header) + " |",
            "|---|---|---|---:|---|" + ("---:|" if with_paper else ""),
        ]
        for c in finding.comparisons:
            cells = [
                row_label(c.better),
                row_label(c.worse),
                c.column,
                difference_text(c.difference) or "n/a",
                c.outcome,
            ]
            if with_paper:
                cells.append(number(c.paper, signed=True))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
