"""Run lmms-eval on one model bundle and check that it really produced every expected number.

lmms-eval exits 0 even when a task failed (it logs "Error during evaluation"), so the exit status
says nothing. After the run we require: one results JSON, a result for every task, every metric a
column reads present and numeric, and as many logged samples as documents asked for. Anything
missing raises ``EvaluationFailed`` naming the task and why. Then ``scores.json`` (paper column ->
value, in the paper's units, and each column's per-question scores) is written for the report.

lmms-eval runs in a subprocess (``eval.lmms_child``: lmms-eval's own command line, then these checks
and the per-question scores, extracted where lmms-eval's scorers are already imported): its logging
setup and ``sys.exit`` stay out of our process, and its whole output is kept in ``lmms_eval.log``
beside the scores.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from llava_more.errors import EvaluationFailed, UserError
from llava_more.eval.benchmarks import Benchmark, get_benchmark, write_overlays
from llava_more.eval.lmms_plugin import MODEL_NAME
from llava_more.outputs import write_text_atomic

SCORES_FILE = "scores.json"
LOG_FILE = "lmms_eval.log"
RAW_DIR = "lmms_eval"  # lmms-eval's own output (results JSON + per-sample logs)
OVERLAY_DIR = "tasks"
CHILD_SCORES_FILE = "scores.child.json"  # the lmms-eval process's checked scores, made scores.json here


def _model_args(model_dir: Path, device: str, dtype: str | None, max_new_tokens: int | None) -> str:
    if "," in str(model_dir) or "=" in str(model_dir):
        raise UserError(
            f"{model_dir}: lmms-eval's model_args cannot carry a path with ',' or '='; move the model"
        )
    args = f"pretrained={model_dir},device={device}"
    args += f",dtype={dtype}" if dtype else ""
    return args + (f",max_new_tokens={max_new_tokens}" if max_new_tokens else "")


def _expected_docs(original: int, limit: float | None) -> int:
    """How many documents lmms-eval should evaluate under ``--limit`` (its own rule)."""
    if limit is None or limit < 0:
        return original
    if limit < 1:
        return int(math.ceil(original * limit))
    return min(original, int(limit))


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): ")


def _last_error(log_path: Path) -> str:
    """The most telling line of a failed lmms-eval log: its last exception (lmms-eval wraps some in
    tenacity's RetryError, which says nothing), else its last error line, else its last line."""
    lines = [_ANSI.sub("", line).strip() for line in log_path.read_text(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    exceptions = [line for line in lines if _EXCEPTION.match(line) and not line.startswith("tenacity.")]
    errors = [line for line in lines if "Error" in line or "error" in line]
    best = (exceptions or errors or lines or ["(empty log)"])[-1]
    return best[-300:]


class _TaskYamlLoader(yaml.SafeLoader):
    """Reads task YAMLs without importing their ``!function`` code (only their data files matter)."""


_TaskYamlLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def check_local_task_files(include_path: Path, benches: list[Benchmark]) -> None:
    """Fail fast, naming the task, when a local task's ``data_files`` are missing (lmms-eval would
    retry for a while, then log the error and exit 0)."""
    wanted = {b.task: b for b in benches}
    for path in sorted(include_path.rglob("*.yaml")):
        try:
            config = yaml.load(path.read_text(encoding="utf-8"), Loader=_TaskYamlLoader)
        except yaml.YAMLError:
            continue  # not ours to judge; lmms-eval reports it
        if (
            not isinstance(config, dict)
            or not isinstance(config.get("task"), str)
            or config["task"] not in wanted
        ):
            continue  # a group (its "task" is a list) or another task
        files = (config.get("dataset_kwargs") or {}).get("data_files") or {}
        for file in files.values() if isinstance(files, dict) else [files]:
            if isinstance(file, str) and not (path.parent / file).is_file():
                bench = wanted[config["task"]]
                raise EvaluationFailed(
                    f"{bench.name}: data file {path.parent / file} (from {path}) is missing; "
                    "re-run `llava-more make-benchmarks`"
                )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_task(bench: Benchmark, results: dict, raw_dir: Path, limit: float | None) -> dict[str, float]:
    task = bench.task
    if task not in results.get("results", {}):
        raise EvaluationFailed(
            f"{bench.name}: lmms-eval wrote no result for task {task!r}; see {raw_dir.parent / LOG_FILE}"
        )
    metrics = results["results"][task]
    for column, spec in bench.columns.items():
        if not _is_number(metrics.get(spec.metric)):
            raise EvaluationFailed(
                f"{bench.name}: metric {spec.metric!r} (column {column}) is {metrics.get(spec.metric)!r} in "
                f"results[{task!r}]; the task ran but did not score"
            )
    counts = results.get("n-samples", {}).get(task)
    if not counts:
        raise EvaluationFailed(f"{bench.name}: lmms-eval recorded no sample count for task {task!r}")
    expected = _expected_docs(int(counts["original"]), limit)
    if int(counts["effective"]) != expected:
        raise EvaluationFailed(
            f"{bench.name}: lmms-eval evaluated {counts['effective']} of {expected} documents of task {task!r}"
        )
    sample_files = list(raw_dir.rglob(f"*_samples_{task}.jsonl"))
    logged = sum(1 for f in sample_files for line in f.read_text().splitlines() if line.strip())
    if logged != expected:
        raise EvaluationFailed(
            f"{bench.name}: {logged} samples logged for task {task!r}, {expected} expected; samples were lost"
        )
    return {key: value for key, value in metrics.items() if _is_number(value)}


def scores_from_results(
    benches: list[Benchmark], results_file: Path, raw_dir: Path, limit: float | None
) -> dict[str, Any]:
    """Check one lmms-eval results JSON (and its sample logs in ``raw_dir``) and turn it into scores.

    Returns ``{"benchmarks", "limit", "columns", "flags", "metrics", "n_samples"}``: ``columns`` maps
    paper columns to values in the paper's units, ``flags`` marks columns (MMBench's share of
    answers no rule could read), ``metrics`` keeps every numeric metric per benchmark.
    """
    results = json.loads(Path(results_file).read_text(encoding="utf-8"))
    metrics = {bench.name: _check_task(bench, results, raw_dir, limit) for bench in benches}
    columns: dict[str, float] = {}
    flags: dict[str, dict[str, float]] = {}
    for bench in benches:
        task_metrics = results["results"][bench.task]
        for column, spec in bench.columns.items():
            columns[column] = float(task_metrics[spec.metric]) * spec.scale
        for column, metric in bench.flags.items():
            if _is_number(task_metrics.get(metric)):
                flags[column] = {metric.split(",")[0]: float(task_metrics[metric])}
    return {
        "benchmarks": [b.name for b in benches],
        "limit": limit,
        "columns": columns,
        "flags": flags,
        "metrics": metrics,
        "n_samples": {b.name: results["n-samples"][b.task] for b in benches},
    }


def run_lmms_eval(
    model_dir: str | Path,
    tasks: list[str],
    include_path: str | Path | None,
    out_dir: str | Path,
    batch_size: int,
    limit: float | None = None,
    *,
    device: str = "cpu",
    dtype: str | None = None,
    max_new_tokens: int | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluate ``model_dir`` on ``tasks`` (benchmark names) with lmms-eval; returns name -> metrics.

    Writes ``out_dir/scores.json`` (columns, flags, raw metrics, sample counts) and keeps lmms-eval's
    output in ``out_dir/lmms_eval/`` and its log in ``out_dir/lmms_eval.log``. ``dtype`` None keeps the
    bundle's saved dtype. Raises
    ``EvaluationFailed`` naming the task when a result, a metric or samples are missing.
    """
    if not tasks:
        raise UserError("evaluate: no tasks given")
    benches = [get_benchmark(name) for name in tasks]
    model_dir = Path(model_dir).resolve()
    out = Path(out_dir)
    names = ", ".join(tasks)
    if not (model_dir / "llava_more.json").is_file():
        raise EvaluationFailed(
            f"{names}: not evaluated, {model_dir} is not a model bundle (no llava_more.json)"
        )
    for bench in benches:
        missing = [var for var in bench.needs_env if not os.environ.get(var)]
        if missing:
            raise EvaluationFailed(f"{bench.name}: needs {', '.join(missing)} (its GPT judge); set it or list "
                                   f"{bench.name.removesuffix('_gpt')} (offline rule-based scoring) instead")  # fmt: skip
    if include_path is not None:
        if not Path(include_path).is_dir():
            raise EvaluationFailed(
                f"{names}: task folder {include_path} does not exist; run `llava-more make-benchmarks`"
            )
        check_local_task_files(Path(include_path), benches)

    out.mkdir(parents=True, exist_ok=True)
    raw_dir = out / RAW_DIR
    shutil.rmtree(raw_dir, ignore_errors=True)
    (out / SCORES_FILE).unlink(missing_ok=True)
    child_scores = out / CHILD_SCORES_FILE
    child_scores.unlink(missing_ok=True)
    overlays = write_overlays(tasks, out / OVERLAY_DIR)
    if overlays and include_path is not None:
        raise UserError(
            f"evaluate: {', '.join(b.name for b in benches if b.overlay)} need llava-more's own task files, which "
            "lmms-eval can only read from one --include-path; evaluate them in a separate run without --include-path"
        )
    search_path = (
        Path(include_path).resolve()
        if include_path is not None
        else (out / OVERLAY_DIR if overlays else None)
    )

    if limit is not None:
        limit = int(limit) if float(limit).is_integer() else float(limit)
    child_spec = {"tasks": list(tasks), "raw_dir": str(raw_dir.resolve()), "limit": limit,
                  "scores": str(child_scores.resolve())}  # fmt: skip
    command = [
        sys.executable, "-m", "llava_more.eval.lmms_child", json.dumps(child_spec), "--",
        "--model", MODEL_NAME,
        "--model_args", _model_args(model_dir, device, dtype, max_new_tokens),
        "--tasks", ",".join(b.task for b in benches),
        "--batch_size", str(int(batch_size)),
        "--output_path", str(raw_dir.resolve()),
        "--log_samples",
    ]  # fmt: skip
    if search_path is not None:
        command += ["--include_path", str(search_path.resolve())]
    if limit is not None:
        command += ["--limit", str(limit)]
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if all(b.name.startswith("demo_") for b in benches):  # local data only: never wait on the network
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("HF_DATASETS_OFFLINE", "1")
    log_path = out / LOG_FILE
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        process = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=out, env=env, check=False)

    if process.returncode != 0 or not child_scores.is_file():
        raise _why_not_scored(benches, raw_dir, limit, process.returncode, log_path)
    scores = json.loads(child_scores.read_text(encoding="utf-8"))
    child_scores.unlink()
    scores["results_file"] = str(RAW_DIR / Path(scores["results_file"]).relative_to(raw_dir.resolve()))
    scores = {"model": str(model_dir), **scores}
    write_text_atomic(out / SCORES_FILE, json.dumps(scores, indent=1) + "\n")
    return scores["metrics"]


def _why_not_scored(
    benches: list[Benchmark], raw_dir: Path, limit: float | None, returncode: int, log_path: Path
) -> EvaluationFailed:
    """The error for an lmms-eval process that left no checked scores: no results file, a results file
    that fails the checks (the check names the task), or a process that failed after scoring."""
    names = ", ".join(b.name for b in benches)
    result_files = sorted(raw_dir.rglob("*_results.json"))
    if not result_files:
        return EvaluationFailed(
            f"{names}: lmms-eval produced no results (exit {returncode}): {_last_error(log_path)}; log: {log_path}"
        )
    try:
        scores_from_results(benches, result_files[-1], raw_dir, limit)
    except EvaluationFailed as failed:
        return failed
    return EvaluationFailed(
        f"{names}: lmms-eval wrote results for every task, then its process failed (exit {returncode}) "
        f"before the per-question scores were extracted: {_last_error(log_path)}; log: {log_path}"
    )
