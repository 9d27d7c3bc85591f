"""A study's whole report from its scores: the tables, the findings, the figures and ``report.html``.

``write_report`` is what ``llava-more report`` runs: it reads every evaluated model's ``scores.json``
(``llava_more.paths.scores`` layout), builds one ``results.StudyResults`` (so every view reads the
same bootstrap draws), lays each of the study's tables out as the paper does, and writes each
product only once it is complete.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from llava_more.config.claims import study_rows
from llava_more.errors import UserError
from llava_more.eval.benchmarks import columns_of
from llava_more.outputs import atomic_dir, write_text_atomic
from llava_more.report.bootstrap import DEFAULT_REPLICATES, Bootstrap
from llava_more.report.calibration import build_calibration
from llava_more.report.figures import write_figures
from llava_more.report.findings import as_json as findings_json
from llava_more.report.findings import check_claims
from llava_more.report.findings import markdown as findings_markdown
from llava_more.report.formats import write_table
from llava_more.report.html import write_html
from llava_more.report.layout import RowKey, table_layout
from llava_more.report.reference import PaperResults
from llava_more.report.results import StudyResults
from llava_more.report.scores import ExperimentScores, load_scores
from llava_more.report.tables import TableView, build_table


def _key(exp, stage: int = 2) -> RowKey:
    return RowKey(exp.llm, exp.vision, exp.s2, exp.pretrain, stage)


def _scores_path(scores_dir: Path, stage: int, exp_id: str) -> Path:
    return scores_dir / f"stage{stage}" / exp_id / "scores.json"


def collect_scores(scores_dir: str | Path, study) -> list[ExperimentScores]:
    """Every experiment's stage-2 scores, and stage-1 scores for the study's ``eval_untrained``
    experiments (``config.Study``); a missing file is an error naming it."""
    wanted = [(2, exp) for exp in study.experiments]
    wanted += [(1, study.experiment(exp_id)) for exp_id in study.eval_untrained]
    return [
        load_scores(
            _scores_path(Path(scores_dir), stage, exp.id),
            exp.id,
            stage=stage,
            seed=exp.seed,
            llm=exp.llm,
            vision=exp.vision,
            s2=exp.s2,
            pretrain=exp.pretrain,
        )
        for stage, exp in wanted
    ]


def compares_with_paper(study) -> bool:
    """Real-size studies reproduce the paper's rows; a published study evaluates its checkpoints."""
    return study.size == "real" or study.published


def study_tables(study, results: StudyResults, reference: PaperResults | None) -> list[TableView]:
    """Each of the study's tables in the paper's layout: its experiments' rows, and the stage-1
    rows of those evaluated before instruction tuning."""
    untrained = set(study.eval_untrained)
    views = []
    for name, exp_ids in study.tables.items():
        members = [study.experiment(exp_id) for exp_id in exp_ids]
        keys = [_key(e) for e in members] + [_key(e, 1) for e in members if e.id in untrained]
        layout = table_layout(name, keys, study.size, with_paper=compares_with_paper(study))
        views.append(build_table(layout, results, reference))
    return views


@dataclass
class ReportPaths:
    tables: dict[str, dict[str, Path]] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    findings: Path | None = None
    html: Path | None = None

    def summary(self) -> dict:
        return {
            "tables": {
                name: {kind: str(p) for kind, p in paths.items()} for name, paths in self.tables.items()
            },
            "figures": [str(p) for p in self.figures],
            "findings": str(self.findings) if self.findings else None,
            "report": str(self.html) if self.html else None,
        }


def write_report(
    study,
    scores_dir: str | Path | None,
    tables_dir: str | Path,
    *,
    reference_csv: str | Path | None = None,
    figures_dir: str | Path | None = None,
    findings_path: str | Path | None = None,
    html_path: str | Path | None = None,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = 0,
) -> ReportPaths:
    """Write the report of ``study`` (``config.Study``). ``scores_dir`` None renders the tables from
    the reference alone (the paper's numbers in the study's layout, before any training).

    The tables and figures are made in staging folders and every file is renamed into place only
    once all of it is complete (``llava_more.outputs``), so a failed report leaves the last one as
    it was. A published study with a reference also gets its calibration view among the tables.
    """
    reference = PaperResults(reference_csv) if reference_csv else None
    if scores_dir is None and reference is None:
        raise UserError("report: without scores (--reference-only) the tables need --reference")
    runs = collect_scores(scores_dir, study) if scores_dir is not None else []
    results = StudyResults(runs, Bootstrap(replicates, seed))
    views = study_tables(study, results, reference)
    findings = check_claims(
        study.findings,
        results,
        reference,
        compares_with_paper(study),
        rows=study_rows(study.experiments, study.eval_untrained),
        columns=tuple(columns_of(list(study.benchmarks))),
    )
    out = ReportPaths()
    with contextlib.ExitStack() as stack:
        tables_stage = stack.enter_context(atomic_dir(tables_dir))
        for view in views:
            out.tables[view.name] = write_table(view, tables_stage)
        if study.published and reference_csv is not None:
            out.tables["calibration"] = build_calibration(runs, reference_csv, tables_stage)
        figures_stage = stack.enter_context(atomic_dir(figures_dir)) if figures_dir is not None else None
        staged_figures = write_figures(results, views, figures_stage) if figures_stage is not None else []
        if findings_path is not None:
            with_paper = any(v.with_paper for v in views)
            out.findings = Path(findings_path)
            write_text_atomic(out.findings, findings_markdown(findings, study.name, with_paper))
            write_text_atomic(
                out.findings.with_suffix(".json"),
                json.dumps(findings_json(findings, study.name), indent=1) + "\n",
            )
        if html_path is not None:
            seeds = max((len(r) for r in results.rows.values()), default=0)
            about = (
                f"{len(results.rows)} evaluated rows"
                + (f", up to {seeds} training seeds each" if seeds > 1 else "")
                + f"; intervals from {replicates} bootstrap replicates (seed {seed})."
            )
            out.html = write_html(html_path, study.name, views, findings, staged_figures, about=about)
        # Where the staged files will be once the folders are moved into place.
        out.tables = {
            name: {kind: Path(tables_dir) / p.relative_to(tables_stage) for kind, p in paths.items()}
            for name, paths in out.tables.items()
        }
        if figures_stage is not None:
            out.figures = [Path(figures_dir) / p.relative_to(figures_stage) for p in staged_figures]
    return out
