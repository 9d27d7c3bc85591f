"""The lmms-eval subprocess: lmms-eval's own command line, then the checked scores, in one interpreter.

``python -m llava_more.eval.lmms_child SPEC -- <lmms-eval arguments>`` runs lmms-eval exactly as
``python -m lmms_eval <arguments>`` would. When lmms-eval returns and its results file passes
``eval.run.scores_from_results``, it extracts every column's per-question scores from the sample logs
(``report.samples.extract_columns``) and writes both to ``SPEC["scores"]``. The extraction uses
lmms-eval's own scorers (MMBench's and MMMU's answer matchers), and importing those costs about as much as
the evaluation of a small bundle; here they are already imported. ``SPEC`` is a JSON object:
``tasks`` (benchmark names), ``raw_dir``, ``limit``, ``scores``.

No file there means the run does not count; the parent (``eval.run.run_lmms_eval``) then finds out why
and says so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from llava_more.errors import EvaluationFailed


def _write_scores(spec: dict) -> None:
    from llava_more.eval.benchmarks import get_benchmark
    from llava_more.eval.run import scores_from_results
    from llava_more.outputs import write_text_atomic
    from llava_more.report.samples import extract_columns

    benches = [get_benchmark(name) for name in spec["tasks"]]
    raw_dir = Path(spec["raw_dir"])
    result_files = sorted(raw_dir.rglob("*_results.json"))
    if not result_files:
        return
    try:
        scores = scores_from_results(benches, result_files[-1], raw_dir, spec["limit"])
    except EvaluationFailed:
        return  # the parent runs the same checks again and names the failure
    per_sample = extract_columns(benches, raw_dir, scores["columns"])
    scores["results_file"] = str(result_files[-1])
    scores["samples_skipped"] = per_sample.skipped
    scores["samples"] = {column: s.to_json() for column, s in per_sample.columns.items()}
    write_text_atomic(Path(spec["scores"]), json.dumps(scores) + "\n")


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[2] != "--":
        raise SystemExit("usage: python -m llava_more.eval.lmms_child SPEC -- <lmms-eval arguments>")
    spec = json.loads(sys.argv[1])
    sys.argv = [sys.argv[0], *sys.argv[3:]]
    from lmms_eval.cli.dispatch import main as lmms_eval_main

    lmms_eval_main()
    _write_scores(spec)


if __name__ == "__main__":
    main()
