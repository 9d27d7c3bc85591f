"""The bootstrap against closed forms where they exist, its reproducibility, pairing and seeds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from llava_more.report.bootstrap import Bootstrap, interval
from llava_more.report.layout import RowKey
from llava_more.report.results import StudyResults
from llava_more.report.samples import ColumnSamples
from llava_more.report.scores import ExperimentScores

B = 4000


def _accuracy(correct: int, n: int, ids: list[str] | None = None, order_seed: int = 0) -> ColumnSamples:
    x = np.zeros(n)
    x[:correct] = 1
    np.random.default_rng(order_seed).shuffle(x)
    return ColumnSamples("mean", ids or [str(i) for i in range(n)], {"x": x})


def _mc_tolerance_of_quantile(q: float, sd: float) -> float:
    """Four Monte Carlo standard errors of a bootstrap quantile (normal approximation)."""
    density = stats.norm.pdf(stats.norm.ppf(q)) / sd
    return 4 * np.sqrt(q * (1 - q) / B) / density


@pytest.mark.parametrize(("n", "p"), [(400, 0.7), (1000, 0.55), (150, 0.9)])
def test_accuracy_interval_matches_the_closed_form_within_monte_carlo_error(n, p):
    correct = round(n * p)
    p = correct / n
    boot = Bootstrap(B, seed=11)
    replicates = boot.run_replicates("GQA", _accuracy(correct, n))
    sd = 100 * np.sqrt(p * (1 - p) / n)
    # The bootstrap distribution of an accuracy is Binomial(n, p)/n: its spread and quantiles in closed form.
    assert replicates.std() == pytest.approx(sd, abs=4 * sd / np.sqrt(2 * B))
    low, high = interval(replicates)
    exact_low, exact_high = 100 * stats.binom.ppf([0.025, 0.975], n, p) / n
    step = 100 / n  # the binomial is discrete
    for ours, exact, q in ((low, exact_low, 0.025), (high, exact_high, 0.975)):
        assert abs(ours - exact) <= _mc_tolerance_of_quantile(q, sd) + step
    # And the textbook interval, p +- 1.96 sd, to within the same error (and its normal approximation).
    wald = (100 * p - 1.96 * sd, 100 * p + 1.96 * sd)
    assert abs(low - wald[0]) <= _mc_tolerance_of_quantile(0.025, sd) + step + 0.15 * sd
    assert abs(high - wald[1]) <= _mc_tolerance_of_quantile(0.975, sd) + step + 0.15 * sd


def test_replicates_are_reproducible_from_the_seed():
    samples = _accuracy(130, 200)
    first = Bootstrap(500, seed=5).run_replicates("GQA", samples)
    again = Bootstrap(500, seed=5).run_replicates("GQA", ColumnSamples.from_json(samples.to_json()))
    other = Bootstrap(500, seed=6).run_replicates("GQA", samples)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    # The draws belong to the column and its questions: another column gets its own.
    assert not np.array_equal(first, Bootstrap(500, seed=5).run_replicates("TextVQA", samples))


def _agreement(n: int, both: int, only_a: int, only_b: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.zeros(n)
    b = np.zeros(n)
    a[: both + only_a] = 1
    b[:both] = 1
    b[both + only_a : both + only_a + only_b] = 1
    return a, b


def test_paired_difference_matches_the_closed_form_and_is_tighter_than_unpaired():
    n, both, only_a, only_b = 600, 300, 90, 40
    a, b = _agreement(n, both, only_a, only_b)
    ids = [str(i) for i in range(n)]
    boot = Bootstrap(B, seed=2)
    boot.prepare(
        "GQA", [sa := ColumnSamples("mean", ids, {"x": a}), sb := ColumnSamples("mean", ids, {"x": b})]
    )
    diff = boot.run_replicates("GQA", sa) - boot.run_replicates("GQA", sb)
    p10, p01 = only_a / n, only_b / n
    sd = 100 * np.sqrt((p10 + p01 - (p10 - p01) ** 2) / n)  # the paired (McNemar) variance
    assert diff.mean() == pytest.approx(100 * (p10 - p01), abs=4 * sd / np.sqrt(B))
    assert diff.std() == pytest.approx(sd, abs=4 * sd / np.sqrt(2 * B))

    # Different question ids: independent draws, and the spread of two independent accuracies.
    other = ColumnSamples("mean", [f"q{i}" for i in range(n)], {"x": b})
    unpaired = boot.run_replicates("GQA", sa) - boot.run_replicates("GQA", other)
    pa, pb = a.mean(), b.mean()
    sd_unpaired = 100 * np.sqrt(pa * (1 - pa) / n + pb * (1 - pb) / n)
    assert unpaired.std() == pytest.approx(sd_unpaired, abs=4 * sd_unpaired / np.sqrt(2 * B))
    assert diff.std() < 0.8 * unpaired.std()


def test_strata_are_redrawn_to_their_own_sizes():
    n_image, n_video, p_image, p_video = 600, 200, 0.7, 0.4
    x = np.r_[np.ones(int(n_image * p_image)), np.zeros(n_image - int(n_image * p_image)),
              np.ones(int(n_video * p_video)), np.zeros(n_video - int(n_video * p_video))]  # fmt: skip
    strata = ["image"] * n_image + ["video"] * n_video
    samples = ColumnSamples("mean", [str(i) for i in range(len(x))], {"x": x}, strata=strata)
    replicates = Bootstrap(B, seed=3).run_replicates("SEED-All", samples)
    n = n_image + n_video
    sd = 100 * np.sqrt((n_image / n) ** 2 * p_image * (1 - p_image) / n_image
                       + (n_video / n) ** 2 * p_video * (1 - p_video) / n_video)  # fmt: skip
    assert replicates.std() == pytest.approx(sd, abs=4 * sd / np.sqrt(2 * B))


def test_seeds_are_averaged_and_redrawn():
    key = RowKey("phi4-mini", "clip-l-336", False, "demo-lcs")
    runs = [
        ExperimentScores("e", {"GQA": s.point()}, seed=seed, llm=key.llm, vision=key.vision, pretrain=key.pretrain,
                         samples={"GQA": s})
        for seed, s in ((0, _accuracy(120, 200, order_seed=1)), (1, _accuracy(150, 200, order_seed=2)))
    ]  # fmt: skip
    results = StudyResults(runs, Bootstrap(B, seed=1))
    estimate = results.estimate(key, "GQA")
    assert estimate.value == pytest.approx(67.5) and estimate.seeds == 2
    assert estimate.spread == pytest.approx(np.std([60.0, 75.0], ddof=1))
    # Seed-to-seed noise widens the interval beyond the question noise of one seed's mean.
    one_seed = Bootstrap(B, seed=1).run_replicates("GQA", runs[0].samples["GQA"])
    assert results.replicates(key, "GQA").std() > 1.5 * one_seed.std()
    assert estimate.low < 60 and estimate.high > 75
