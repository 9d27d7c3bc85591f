"""``report.html``: one self-contained page per study with its findings, tables and figures.

Nothing is fetched when the page opens: the styles and a few lines of script (a self-check that
every figure decoded) are inline and the figures are embedded as ``data:`` PNGs, so the file can be
mailed, archived or opened on a cluster node as it is.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from llava_more.outputs import write_text_atomic
from llava_more.report.findings import FAILS, HOLDS, NOISE, Finding, row_label, summary
from llava_more.report.formats import cell_parts, difference_text, number
from llava_more.report.layout import COLUMN_GROUPS, column_label
from llava_more.report.tables import Cell, TableView

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #1b1b1b; max-width: 1600px; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 2px solid #8c959f; }
table.results { border-collapse: collapse; margin: 1em 0; font-size: 12px; }
table.results th { background: #1f4e79; color: #ffffff; padding: 4px 6px; font-weight: 600; }
table.results td { border-bottom: 1px solid #d0d7de; padding: 3px 6px; text-align: right; vertical-align: top; }
table.results td.label { text-align: left; white-space: nowrap; }
table.results tr.block td { background: #dce6f1; font-style: italic; font-weight: 600; text-align: left; }
table.results tr.section td { background: #f3f6fa; font-style: italic; text-align: left; padding-left: 1.5em; }
table.results tr.untrained td { color: #6b6b6b; }
.best { font-weight: 700; } .ci, .paper { display: block; font-size: 10px; color: #57606a; }
.verdict { padding: 1px 6px; border-radius: 4px; font-weight: 600; white-space: nowrap; }
.holds { background: #cce8cc; } .fails { background: #f4c7c3; } .noise { background: #fff2b3; }
.unchecked { background: #e0e0e0; }
.notes { font-size: 12px; color: #444; } figure { margin: 1em 0; } figure img { max-width: 100%; }
"""
_VERDICT_CLASS = {HOLDS: "holds", FAILS: "fails", NOISE: "noise"}
# On load, the page checks itself: every figure decoded. A broken one is reported on the console,
# and <body data-rendered> says whether all were fine (what the browser test reads).
_SELF_CHECK = """
window.addEventListener("load", () => {
  const broken = [...document.images].filter((img) => !img.complete || img.naturalWidth === 0);
  broken.forEach((img) => console.error("figure did not render: " + img.alt));
  document.body.dataset.rendered = broken.length ? "broken" : "ok";
});
"""


def _cell(cell: Cell) -> str:
    value, extra, paper = cell_parts(cell)
    parts = []
    if value:
        parts.append(
            f'<span class="{"best" if cell.best else "value"}">{escape(value)}{"†" if cell.flag else ""}</span>'
        )
    if extra:
        parts.append(f'<span class="ci">{escape(extra)}</span>')
    if paper:
        parts.append(f'<span class="paper">{escape(paper)}</span>')
    return "".join(parts)


def table_html(view: TableView) -> str:
    info = view.layout.info_columns
    width = 1 + len(info) + len(view.columns)
    head = []
    spans = []
    for title, members in COLUMN_GROUPS:
        shown = [c for c in view.benchmarks if c in members]
        if shown:
            spans.append((title, len(shown)))
    if sum(n for _, n in spans) == len(view.benchmarks) and len(spans) > 1 and view.name != "readme":
        cells = f'<th colspan="{1 + len(info)}"></th>' + "".join(
            f'<th colspan="{n}">{escape(t)}</th>' for t, n in spans
        )
        head.append(f"<tr>{cells}<th></th></tr>")
    names = ["Model", *info, *(column_label(c) for c in view.columns)]
    head.append("<tr>" + "".join(f"<th>{escape(n)}</th>" for n in names) + "</tr>")
    body = []
    for block in view.blocks:
        if block.title:
            body.append(f'<tr class="block"><td colspan="{width}">{escape(block.title)}</td></tr>')
        section = None
        for row in block.rows:
            if row.spec.section and row.spec.section != section:
                body.append(f'<tr class="section"><td colspan="{width}">{escape(row.spec.section)}</td></tr>')
            section = row.spec.section
            cells = [f'<td class="label">{escape(row.label)}</td>']
            cells += [f"<td>{escape(row.spec.info.get(n, ''))}</td>" for n in info]
            cells += [f"<td>{_cell(row.cells[c])}</td>" for c in view.columns]
            css = ' class="untrained"' if row.key.stage != 2 else ""
            body.append(f"<tr{css}>" + "".join(cells) + "</tr>")
    out = [f'<h2 id="{view.name}">{escape(view.title)}</h2>',
           f'<table class="results" data-table="{view.name}"><thead>{"".join(head)}</thead>'
           f'<tbody>{"".join(body)}</tbody></table>']  # fmt: skip
    diffs = [row for row in view.rows() if row.differences]
    if diffs:
        header = "".join(
            f"<th>{escape(n)}</th>" for n in ["Model", "Baseline", *(column_label(c) for c in view.columns)]
        )
        lines = []
        for row in diffs:
            cells = [row.label, row.baseline.label if row.baseline else ""]
            cells += [difference_text(row.differences.get(c)) for c in view.columns]
            lines.append("<tr>" + "".join(f'<td class="label">{escape(c)}</td>' if i < 2 else f"<td>{escape(c)}</td>"
                                          for i, c in enumerate(cells)) + "</tr>")  # fmt: skip
        out.append("<p>Differences within blocks (row − baseline, paired 95% interval; * excludes zero):</p>")
        out.append(f'<table class="results differences"><thead><tr>{header}</tr></thead>'
                   f'<tbody>{"".join(lines)}</tbody></table>')  # fmt: skip
    out.append('<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in view.notes) + "</ul>")
    return "\n".join(out)


def findings_html(findings: list[Finding], with_paper: bool) -> str:
    if not findings:
        return "<p>The study lists no claims (<code>findings:</code> in params.yaml).</p>"
    rows = []
    for i, f in enumerate(findings, 1):
        css = _VERDICT_CLASS.get(f.verdict, "unchecked")
        rows.append(f'<tr><td>{i}</td><td class="label">{escape(f.claim.text)}</td>'
                    f'<td><span class="verdict {css}">{escape(f.verdict)}</span></td>'
                    f'<td class="label">{escape(summary(f))}</td></tr>')  # fmt: skip
    out = ['<table class="results findings"><thead><tr><th>#</th><th>Claim</th><th>Verdict</th><th>Evidence</th>'
           f'</tr></thead><tbody>{"".join(rows)}</tbody></table>']  # fmt: skip
    for i, f in enumerate(findings, 1):
        header = ["Better", "Than", "Column", "Difference [95% CI]", "Outcome"] + (
            ["Paper"] if with_paper else []
        )
        lines = []
        for c in f.comparisons:
            cells = [
                row_label(c.better),
                row_label(c.worse),
                c.column,
                difference_text(c.difference) or "n/a",
                c.outcome,
            ]
            if with_paper:
                cells.append(number(c.paper, signed=True))
            lines.append("<tr>" + "".join(f"<td>{escape(x)}</td>" for x in cells) + "</tr>")
        out.append(f"<details><summary>{i}. {escape(f.claim.text)}: {escape(f.verdict)}</summary>"
                   f'<table class="results"><thead><tr>{"".join(f"<th>{escape(h)}</th>" for h in header)}</tr></thead>'
                   f'<tbody>{"".join(lines)}</tbody></table></details>')  # fmt: skip
    return "\n".join(out)


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{escape(path.stem)}" src="data:image/png;base64,{data}"><figcaption>{escape(path.stem)}</figcaption></figure>'


def write_html(
    path: str | Path,
    study: str,
    views: list[TableView],
    findings: list[Finding],
    figures: list[Path],
    *,
    about: str = "",
) -> Path:
    """Write the page; ``about`` is a line on how the numbers were made (replicates, seeds)."""
    with_paper = any(v.with_paper for v in views)
    toc = "".join(f'<li><a href="#{v.name}">{escape(v.title)}</a></li>' for v in views)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>llava-more report: {escape(study)}</title><style>{_STYLE}</style>",
        f"<script>{_SELF_CHECK}</script></head><body>",
        f"<h1>Study <code>{escape(study)}</code></h1>",
        f'<p class="notes">{escape(about)}</p>' if about else "",
        f"<ul>{toc}</ul>",
        '<h2 id="findings">Findings</h2>',
        findings_html(findings, with_paper),
        *(table_html(v) for v in views),
        '<h2 id="figures">Figures</h2>' if figures else "",
        *(_figure(p) for p in figures),
        "</body></html>",
    ]
    path = Path(path)
    write_text_atomic(path, "\n".join(p for p in parts if p) + "\n")
    return path
