"""report.html in a real headless browser (Debian's chromium): it renders without console errors,
every figure decodes, and the screenshot shows the tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llava_more.config import load_params
from llava_more.report.build import write_report
from llava_more.report.html import write_html
from llava_more.report.samples import ColumnSamples
from tests.browser import render

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
HEADER = (0x1F, 0x4E, 0x79)  # the tables' header colour (html._STYLE)


def _fake_scores(scores_dir: Path, study) -> None:
    """Every demo model with per-question scores on three benchmarks (better models later in the list)."""
    rng = np.random.default_rng(0)
    for stage in (1, 2):
        for i, exp in enumerate(study.experiments):
            columns, samples = {}, {}
            for column, n in (("GQA", 100), ("TextVQA", 100), ("SEED-All", 120)):
                p = 0.3 + 0.1 * i if stage == 2 else 0.05
                s = ColumnSamples("mean", [str(j) for j in range(n)], {"x": (rng.random(n) < p).astype(float)},
                                  chance=25.0 if column == "SEED-All" else 0.0)  # fmt: skip
                columns[column], samples[column] = s.point(), s.to_json()
            path = scores_dir / f"stage{stage}" / exp.id / "scores.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"columns": columns, "flags": {}, "samples": samples}))


def _header_bands(screenshot: Path) -> tuple[int, int]:
    """(pixels in the header colour, separate horizontal bands of them)."""
    pixels = np.asarray(Image.open(screenshot).convert("RGB")).astype(int)
    mask = np.abs(pixels - np.array(HEADER)).sum(axis=2) < 12
    rows = mask.sum(axis=1) > 50  # a row of the screenshot crossing a table header
    bands = int(np.sum(rows[1:] & ~rows[:-1]) + rows[0])
    return int(mask.sum()), bands


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("report")
    study = load_params(PARAMS).study("demo")
    _fake_scores(out / "eval", study)
    paths = write_report(study, out / "eval", out / "tables", figures_dir=out / "plots", findings_path=out / "findings.md",
                         html_path=out / "report.html", replicates=300)  # fmt: skip
    return paths.html, study


def test_report_html_renders_in_headless_chromium_and_shows_the_tables(report, tmp_path):
    html, study = report
    page = render(html, tmp_path / "report.png", height=6000)
    assert page.console == []
    assert 'data-rendered="ok"' in page.dom  # the page's self-check ran: every figure decoded
    for name in study.tables:
        assert f'data-table="{name}"' in page.dom
    assert page.dom.count('class="verdict ') == len(study.findings) > 0  # the demo's claims, checked
    assert page.dom.count("<img") == 2  # radar and heatmap (a tiny study has no paper values)
    pixels, bands = _header_bands(page.screenshot)
    # Each table (and each differences table) has a header band; the four demo tables are all on the page.
    assert bands >= len(study.tables) and pixels > 20_000
    image = Image.open(page.screenshot)
    assert image.size == (1400, 6000)


def test_the_browser_check_catches_a_broken_figure_and_a_page_without_tables(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    page = write_html(tmp_path / "broken.html", "demo", [], [], [bad])
    rendered = render(page, tmp_path / "broken.png", height=800)
    assert any("figure did not render: bad" in message for message in rendered.console)
    assert 'data-rendered="broken"' in rendered.dom
    assert _header_bands(rendered.screenshot) == (0, 0)
