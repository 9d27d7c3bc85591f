"""Claims checked against built results: verdicts that follow from the numbers (holds, does not
hold, within noise), quantifiers, stages, the paper's differences, and bad claims in params.yaml."""

from __future__ import annotations

import numpy as np
import pytest

from llava_more.config.claims import comparisons, parse_claim, parse_findings
from llava_more.errors import ConfigError
from llava_more.report.bootstrap import Bootstrap
from llava_more.report.findings import (
    CONTRADICTS,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NOISE,
    NOT_EVALUATED,
    SHOWS,
    UNCHECKED,
    check_claims,
    markdown,
)
from llava_more.report.layout import RowKey
from llava_more.report.reference import PaperResults
from llava_more.report.results import StudyResults
from llava_more.report.samples import ColumnSamples
from llava_more.report.scores import ExperimentScores
from tests.test_report_tables import REFERENCE_CSV

N = 400  # questions per benchmark


def _accuracy(correct: int, base: np.ndarray | None = None, seed: int = 0) -> ColumnSamples:
    """``correct`` of N questions right; with ``base``, by changing as few answers of it as possible
    (so two models agree on most questions, as real ones do)."""
    if base is None:
        x = np.zeros(N)
        x[:correct] = 1
        np.random.default_rng(seed).shuffle(x)
    else:
        x = base.copy()
        rng = np.random.default_rng(seed)
        change = correct - int(x.sum())
        pool = np.flatnonzero(x == (0 if change > 0 else 1))
        x[rng.choice(pool, abs(change), replace=False)] = 1 if change > 0 else 0
    return ColumnSamples("mean", [str(i) for i in range(N)], {"x": x})


def _run(key: RowKey, samples: dict[str, ColumnSamples]) -> ExperimentScores:
    return ExperimentScores("x", {c: s.point() for c, s in samples.items()}, {}, key.stage, key.llm, key.vision,
                            key.s2, key.pretrain, None, samples)  # fmt: skip


CLIP = RowKey("phi4-mini", "clip-l-336", False, "lcs")
SIGLIP2 = RowKey("phi4-mini", "siglip2-so400m-384", False, "lcs")
CLIP_9B = RowKey("gemma2-9b", "clip-l-336", False, "lcs")
SIGLIP2_9B = RowKey("gemma2-9b", "siglip2-so400m-384", False, "lcs")


def _results() -> StudyResults:
    """TextVQA: SigLIP2 far better at both sizes. GQA: SigLIP2 worse at 3.8B, 1 question better at 9B.
    POPE: one question apart (noise) at 3.8B, far better at 9B."""
    base = {c: _accuracy(200, seed=i) for i, c in enumerate(("TextVQA", "GQA", "POPE"))}
    x = {c: s.features["x"] for c, s in base.items()}
    runs = [
        _run(CLIP, base),
        _run(SIGLIP2, {"TextVQA": _accuracy(260, x["TextVQA"], 1), "GQA": _accuracy(150, x["GQA"], 2),
                       "POPE": _accuracy(201, x["POPE"], 3)}),
        _run(CLIP_9B, base),
        _run(SIGLIP2_9B, {"TextVQA": _accuracy(250, x["TextVQA"], 4), "GQA": _accuracy(201, x["GQA"], 5),
                          "POPE": _accuracy(260, x["POPE"], 6)}),
    ]  # fmt: skip
    return StudyResults(runs, Bootstrap(1000, seed=0))


def _rows(results: StudyResults) -> list[dict]:
    return [
        {"llm": k.llm, "vision": k.vision, "s2": k.s2, "pretrain": k.pretrain, "stage": k.stage}
        for k in results.rows
    ]


def _claim(results, **raw):
    raw = {"claim": "SigLIP2 beats CLIP", "better": {"vision": "siglip2-so400m-384"},
           "than": {"vision": "clip-l-336"}, **raw}  # fmt: skip
    return parse_claim(raw, "studies.s.findings[0]", _rows(results), ("TextVQA", "GQA", "POPE"))


def test_verdicts_follow_from_the_numbers():
    results = _results()
    claims = (
        _claim(results, columns=["TextVQA"]),  # +15 and +12.5 points on 400 questions: holds at both sizes
        _claim(results, columns=["GQA"], where={"llm": "phi4-mini"}),  # -12.5 points: contradicted
        _claim(results, columns=["POPE"], where={"llm": "phi4-mini"}),  # one question: noise
        _claim(results, columns=["GQA"]),  # all sizes: contradicted at 3.8B, so it cannot hold
        _claim(results, columns=["POPE"], holds_for="any"),  # shown at 9B: enough for "any"
        _claim(results, columns=["POPE"]),  # all: shown at 9B, noise at 3.8B
    )
    findings = check_claims(claims, results)
    assert [f.verdict for f in findings] == [HOLDS, FAILS, NOISE, FAILS, HOLDS, NOISE]
    assert [c.outcome for c in findings[0].comparisons] == [SHOWS, SHOWS]
    assert [c.outcome for c in findings[3].comparisons] == [CONTRADICTS, INCONCLUSIVE]
    diff = findings[0].comparisons[0].difference
    assert diff.value == pytest.approx(15.0) and diff.low > 0 and diff.paired
    # Each comparison pairs a row with the one that differs only in the claimed setting.
    assert [(c.better, c.worse) for c in findings[0].comparisons] == [(SIGLIP2, CLIP), (SIGLIP2_9B, CLIP_9B)]


def test_most_needs_more_than_half_of_the_comparisons():
    results = _results()
    # Both sizes x three columns: TextVQA shown twice, POPE shown once, GQA contradicted once.
    most = check_claims((_claim(results, holds_for="most"),), results)[0]
    assert len(most.comparisons) == 6 and most.needed == 4 and most.count(SHOWS) == 3
    assert most.verdict == NOISE  # 3 shown + 2 inconclusive could still reach 4
    # Averaged over the three columns, SigLIP2's gain holds at 9B.
    avg = check_claims((_claim(results, columns=["Avg"], where={"llm": "gemma2-9b"}),), results)[0]
    assert avg.verdict == HOLDS and avg.comparisons[0].difference.value == pytest.approx(
        (12.5 + 0.25 + 15) / 3
    )


def test_findings_md_says_the_verdict_and_the_numbers_behind_it():
    results = _results()
    findings = check_claims((_claim(results, columns=["TextVQA"]), _claim(results, columns=["GQA"])), results)
    md = markdown(findings, "demo")
    assert "| 1 | SigLIP2 beats CLIP | **holds** | 2 of 2 comparisons show it; it needs all |" in md
    assert "| 2 | SigLIP2 beats CLIP | **does not hold** |" in md and "1 contradict it" in md
    line = next(
        line
        for line in md.splitlines()
        if line.startswith("| Phi-4-3.8B, SigLIP2 ViT-L/14") and "TextVQA" in line
    )
    assert "| +15.0 [+" in line and line.endswith("| shows it |")


def test_stage_claims_compare_a_model_with_its_stage_1_twin():
    tuned = _accuracy(300)
    untrained = RowKey(CLIP.llm, CLIP.vision, CLIP.s2, CLIP.pretrain, stage=1)
    results = StudyResults([_run(CLIP, {"GQA": tuned}), _run(untrained, {"GQA": _accuracy(10, seed=3)})],
                           Bootstrap(500))  # fmt: skip
    claim = parse_claim({"claim": "instruction tuning teaches it", "better": {"stage": 2}, "than": {"stage": 1}},
                        "f", _rows(results), ("GQA",))  # fmt: skip
    (finding,) = check_claims((claim,), results)
    assert finding.verdict == HOLDS and finding.comparisons[0].worse.stage == 1
    assert "(stage 1)" in markdown([finding], "demo")


def test_real_studies_show_the_papers_difference_beside_ours():
    results = _results()
    (finding,) = check_claims(
        (_claim(results, columns=["TextVQA"]),), results, PaperResults(REFERENCE_CSV), with_paper=True
    )
    assert [c.paper for c in finding.comparisons] == [pytest.approx(59.7 - 54.0), pytest.approx(66.7 - 60.7)]
    assert "| Paper |" in markdown([finding], "paper", with_paper=True) and "| +5.7 |" in markdown(
        [finding], "paper", with_paper=True
    )


def test_comparisons_not_evaluated_yet_leave_the_verdict_open_until_they_decide_nothing():
    results = _results()
    rows = _rows(results) + [{"llm": "phi-2", "vision": v, "s2": False, "pretrain": "lcs", "stage": 2}
                             for v in ("clip-l-336", "siglip2-so400m-384")]  # fmt: skip
    # Study rows not evaluated: Phi-2's pair adds a third comparison without numbers.
    (shown_twice,) = check_claims((_claim(results, columns=["TextVQA"]),), results, rows=rows)
    assert [c.outcome for c in shown_twice.comparisons][-1] == NOT_EVALUATED
    assert shown_twice.verdict == UNCHECKED  # all three must show it: the third could still fail
    assert (
        check_claims((_claim(results, columns=["TextVQA"], holds_for="most"),), results, rows=rows)[0].verdict
        == HOLDS
    )
    assert check_claims((_claim(results, columns=["GQA"]),), results, rows=rows)[0].verdict == FAILS
    assert "1 not evaluated" in markdown([shown_twice], "demo")


def test_a_claim_without_evaluated_rows_is_not_checked():
    results = _results()
    claim = _claim(results, columns=["TextVQA"])
    empty = StudyResults([], Bootstrap(100))
    assert check_claims((claim,), empty)[0].verdict == UNCHECKED


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"claim": "x", "better": {"vision": "siglip2-so400m-384"}}, r"\.than: required key is missing"),
        ({"claim": "x", "better": {"vision": "siglip2-so400m-384"}, "than": {"llm": "gemma2-9b"}},
         "must set the same settings"),
        ({"claim": "x", "better": {"vison": "a"}, "than": {"vison": "b"}}, r"\.better\.vison: unknown key \(did you mean .vision.\?\)"),
        ({"claim": "x", "better": {"vision": "siglip-so400m-384"}, "than": {"vision": "clip-l-336"}},
         r"'siglip-so400m-384' is not a vision of the study's rows"),
        ({"claim": "x", "better": {"vision": "siglip2-so400m-384"}, "than": {"vision": "clip-l-336"},
          "columns": ["SEED-All"]}, r"\.columns: 'SEED-All' is not a column of the study"),
        ({"claim": "x", "better": {"vision": "siglip2-so400m-384"}, "than": {"vision": "clip-l-336"},
          "holds_for": "mostly"}, "holds_for: 'mostly' is not one of all, most, any"),
        ({"claim": "x", "better": {"vision": "siglip2-so400m-384"}, "than": {"vision": "clip-l-336"},
          "where": {"llm": "phi4-mini"}, "wher": 1}, r"\.wher: unknown key"),
        ({"claim": "x", "better": {"llm": "phi4-mini"}, "than": {"llm": "gemma2-9b"}, "where": {"llm": "gemma2-9b"}},
         "nothing to check this claim on"),
    ],
)  # fmt: skip
def test_bad_claims_are_config_errors_naming_the_key(raw, message):
    rows = _rows(_results())
    with pytest.raises(ConfigError, match=message):
        parse_claim(raw, "studies.s.findings[0]", rows, ("TextVQA", "GQA", "POPE"))


def test_findings_list_and_comparisons():
    rows = _rows(_results())
    assert parse_findings(None, "f", rows, ("GQA",)) == ()
    with pytest.raises(ConfigError, match="expected a list of claims"):
        parse_findings({"claim": "x"}, "studies.s.findings", rows, ("GQA",))
    claim = parse_claim(
        {"claim": "x", "better": {"llm": "gemma2-9b"}, "than": {"llm": "phi4-mini"}}, "f", rows, ()
    )
    assert [(b["vision"], w["vision"]) for b, w in comparisons(claim, rows)] == [
        ("clip-l-336", "clip-l-336"), ("siglip2-so400m-384", "siglip2-so400m-384")]  # fmt: skip
