"""The report's figures: Fig. 1's models, the heatmap's chance scale, ours against the paper."""

from __future__ import annotations

import pytest

from llava_more.report.bootstrap import Bootstrap
from llava_more.report.figures import FIGURE_ONE, above_chance, radar_models, write_figures
from llava_more.report.layout import RowKey, table_layout
from llava_more.report.reference import PaperResults
from llava_more.report.results import StudyResults
from llava_more.report.tables import build_table
from tests.test_report_tables import REFERENCE_CSV, _run

PNG = b"\x89PNG\r\n\x1a\n"
VALUES = {"GQA": 60.0, "TextVQA": 55.0, "POPE": 85.0, "MMMU": 38.0}


def _views(results: StudyResults, keys: list[RowKey], size: str, reference=None):
    table1 = [k for k in keys if k.vision == "clip-l-336"]
    return [build_table(table_layout("table1_llm", table1, size), results, reference)]


def test_a_real_study_gets_figure_one_and_ours_against_the_paper(tmp_path):
    keys = [*FIGURE_ONE, RowKey("phi4-mini", "clip-l-336", False, "lcs")]
    results = StudyResults(
        [_run(k, {c: v + i for c, v in VALUES.items()}) for i, k in enumerate(keys)], Bootstrap(200)
    )
    views = _views(results, keys, "real", PaperResults(REFERENCE_CSV))
    assert radar_models(results, views) == list(FIGURE_ONE)  # the paper's Fig. 1 trio
    written = write_figures(results, views, tmp_path)
    assert [p.name for p in written] == ["radar.png", "heatmap.png", "ours_vs_paper.png"]
    assert all(p.read_bytes()[:8] == PNG for p in written)


def test_a_tiny_study_plots_its_table_1_and_its_best_model(tmp_path):
    keys = [RowKey(llm, "clip-l-336", False, "demo-lcs") for llm in ("llama3.1-8b", "gemma2-2b")]
    best = RowKey("phi4-mini", "siglip2-so400m-384", False, "demo-lcs")
    runs = [_run(k, VALUES) for k in keys] + [_run(best, {c: v + 10 for c, v in VALUES.items()})]
    results = StudyResults(runs, Bootstrap(200))
    views = _views(results, [*keys, best], "tiny")
    assert radar_models(results, views) == [keys[1], keys[0], best]  # table 1's order, then the best
    assert [p.name for p in write_figures(results, views, tmp_path)] == ["radar.png", "heatmap.png"]


@pytest.mark.parametrize(
    ("column", "value", "chance", "shade"),
    [("AI2D", 25.0, 25.0, 0.0), ("AI2D", 100.0, 25.0, 1.0), ("POPE", 75.0, 50.0, 0.5), ("MME-P", 750.0, 750.0, 0.0),
     ("MME-P", 2000.0, 750.0, 1.0), ("GQA", 40.0, None, 0.4), ("SEED-All", 10.0, 25.0, -0.2)],
)  # fmt: skip
def test_the_heatmap_shades_from_chance_to_a_perfect_score(column, value, chance, shade):
    assert above_chance(column, value, chance) == pytest.approx(shade)
