"""Which lmms-eval task and metric fills each of the paper's 13 benchmark columns.

A *benchmark* is a name a study lists (``params.yaml`` ``benchmark_suites``): a real lmms-eval task
(``gqa``, ``pope``...) or one of our demo twins (``demo_gqa``...). Each maps to the lmms-eval task
that is actually run and to the columns it fills, each read from lmms-eval's results JSON at
``results[task]["<metric>,<filter>"]`` and scaled to the unit the paper prints.

Choices that are not obvious:

- POPE: the paper prints the **F1 score** (LLaVA-1.5's convention), so the column reads
  ``pope_f1_score`` of lmms-eval's ``pope`` task (all three splits, adversarial/popular/random).
- MME: perception and cognition are the summed category scores (acc + acc+), unscaled.
- TextVQA runs ``textvqa_val_ocr``: lmms-eval's ``textvqa_val`` with the OCR tokens in the prompt
  (``lmms_eval_specific_kwargs.default.ocr: true``), as the paper evaluates it.
- MMBench: lmms-eval's ``mmbench_*_dev`` send every answer the rule-based option matcher cannot
  read to a GPT judge and, offline, fall back to a *random* letter. We run
  ``mmbench_*_dev_rules`` instead: the same data, prompt and rule matcher, then lmms-eval's own
  static (no-API) extraction; an answer neither can read counts as wrong, never random. The share
  of such answers is reported as ``rule_unmatched`` and marked in the tables. Listing
  ``mmbench_en_dev_gpt`` / ``mmbench_cn_dev_gpt`` runs the original GPT-judged tasks instead and
  requires ``OPENAI_API_KEY``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llava_more.errors import UserError

# The paper's columns, in its order.
COLUMNS: tuple[str, ...] = (
    "GQA", "ScienceQA", "TextVQA", "AI2D", "POPE", "MME-P", "MME-C",
    "MMB-CN", "MMB-EN", "SEED-All", "SEED-V", "SEED-I", "MMMU",
)  # fmt: skip
# The report's extra column: a row's average over a table's benchmark columns.
AVERAGE = "Avg"


@dataclass(frozen=True)
class Column:
    """One table column: where its number is in lmms-eval's results and how it is scaled."""

    metric: str  # "<metric>,<filter>" key inside results[task]
    scale: float = 100.0  # lmms-eval gives fractions where the paper prints percentages


@dataclass(frozen=True)
class Benchmark:
    name: str  # what a study lists
    task: str  # the lmms-eval task that runs
    columns: dict[str, Column]
    # Extra metrics whose value marks a column (column -> metric key), e.g. MMBench's unmatched share.
    flags: dict[str, str] = field(default_factory=dict)
    needs_env: tuple[str, ...] = ()  # environment variables the task cannot run without
    overlay: str | None = None  # name of a YAML we write for lmms-eval (see overlay_yaml)


def _acc(column: str, metric: str = "exact_match,none", scale: float = 100.0) -> dict[str, Column]:
    return {column: Column(metric, scale)}


_POPE = {"POPE": Column("pope_f1_score,none")}
_MME = {"MME-P": Column("mme_perception_score,none", 1.0), "MME-C": Column("mme_cognition_score,none", 1.0)}
_SEED = {
    "SEED-All": Column("seed_all,none"),
    "SEED-V": Column("seed_video,none"),
    "SEED-I": Column("seed_image,none"),
}
_MMB_EN = {"MMB-EN": Column("gpt_eval_score,none", 1.0)}  # lmms-eval's aggregator already gives percent
_MMB_CN = {"MMB-CN": Column("gpt_eval_score,none", 1.0)}
_UNMATCHED = "rule_unmatched,none"

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        # ---- lmms-eval's own tasks (cluster runs)
        Benchmark("gqa", "gqa", _acc("GQA")),
        Benchmark("scienceqa_img", "scienceqa_img", _acc("ScienceQA")),
        Benchmark("textvqa_val", "textvqa_val_ocr", _acc("TextVQA"), overlay="textvqa_val_ocr"),
        Benchmark("ai2d", "ai2d", _acc("AI2D", "exact_match,flexible-extract")),
        Benchmark("pope", "pope", _POPE),
        Benchmark("mme", "mme", _MME),
        Benchmark(
            "mmbench_en_dev",
            "mmbench_en_dev_rules",
            _MMB_EN,
            {"MMB-EN": _UNMATCHED},
            overlay="mmbench_en_dev_rules",
        ),
        Benchmark(
            "mmbench_cn_dev",
            "mmbench_cn_dev_rules",
            _MMB_CN,
            {"MMB-CN": _UNMATCHED},
            overlay="mmbench_cn_dev_rules",
        ),
        Benchmark("mmbench_en_dev_gpt", "mmbench_en_dev", _MMB_EN, needs_env=("OPENAI_API_KEY",)),
        Benchmark("mmbench_cn_dev_gpt", "mmbench_cn_dev", _MMB_CN, needs_env=("OPENAI_API_KEY",)),
        Benchmark("seedbench", "seedbench", _SEED),
        Benchmark("mmmu_val", "mmmu_val", _acc("MMMU", "mmmu_acc,none")),
        # ---- demo twins (``llava-more make-benchmarks``), same formats and scoring code
        Benchmark("demo_gqa", "demo_gqa", _acc("GQA")),
        Benchmark("demo_scienceqa_img", "demo_scienceqa_img", _acc("ScienceQA")),
        Benchmark("demo_textvqa", "demo_textvqa", _acc("TextVQA")),
        Benchmark("demo_ai2d", "demo_ai2d", _acc("AI2D", "exact_match,flexible-extract")),
        Benchmark("demo_pope", "demo_pope", _POPE),
        Benchmark("demo_mme", "demo_mme", _MME),
        Benchmark("demo_mmbench_en", "demo_mmbench_en", _MMB_EN, {"MMB-EN": _UNMATCHED}),
        Benchmark("demo_mmbench_cn", "demo_mmbench_cn", _MMB_CN, {"MMB-CN": _UNMATCHED}),
        Benchmark("demo_seedbench", "demo_seedbench", _SEED),
        Benchmark("demo_mmmu", "demo_mmmu", _acc("MMMU", "mmmu_acc,none")),
    )
}


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called ``name``; ``UserError`` listing the known names otherwise."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise UserError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}") from None


def lmms_eval_task_names() -> set[str]:
    """Every task and group name the installed lmms-eval defines, read from its task YAMLs (a text scan,
    without importing lmms-eval: about 0.2 s)."""
    import importlib.util
    import re

    spec = importlib.util.find_spec("lmms_eval")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("lmms-eval is not installed; install llava-more with its dependencies")
    root = Path(next(iter(spec.submodule_search_locations))) / "tasks"
    declared = re.compile(r"^(?:task|group):\s*['\"]?([\w.\-]+)['\"]?\s*$", re.M)
    return {
        name for path in root.rglob("*.yaml") for name in declared.findall(path.read_text(errors="replace"))
    }


def unknown_benchmark(name: str, path: str, lmms_tasks: set[str] | None = None) -> str | None:
    """Why ``name`` (listed at ``path`` in params.yaml) cannot be evaluated, or None when it can.

    A name must be one of ours (``BENCHMARKS``: lmms-eval tasks with their column mapping, and the demo
    twins); with ``lmms_tasks`` given, a real benchmark's task must also exist in the installed
    lmms-eval (an overlay's base task, for the tasks we write ourselves).
    """
    if name not in BENCHMARKS:
        import difflib

        close = difflib.get_close_matches(name, list(BENCHMARKS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{path}: unknown benchmark {name!r}{hint}; known: {', '.join(BENCHMARKS)}"
    if lmms_tasks is None:
        return None
    from llava_more.eval.demo_tasks import DEMO_TASKS

    bench = BENCHMARKS[name]
    if bench.task in DEMO_TASKS:
        return None
    base = name if bench.overlay else bench.task  # an overlay's name is the task it changes
    if base not in lmms_tasks:
        return (
            f"{path}: benchmark {name!r} needs lmms-eval's task {base!r}, which the installed lmms-eval does "
            "not define; install the lmms-eval version pinned in constraints/cpu.txt"
        )
    return None


def columns_of(names: list[str]) -> list[str]:
    """The paper columns the given benchmarks fill, in the paper's order."""
    filled = {column for name in names for column in get_benchmark(name).columns}
    return [c for c in COLUMNS if c in filled]


# ---------------------------------------------------------------------------------------------
# Overlays: real lmms-eval tasks with one setting changed, written where lmms-eval can find them
# ---------------------------------------------------------------------------------------------


class _Function(str):
    """A ``!function module.attr`` reference in a task YAML."""


class _TaskDumper(yaml.SafeDumper):
    pass


_TaskDumper.add_representer(_Function, lambda dumper, value: dumper.represent_scalar("!function", str(value)))


def function(path: str) -> _Function:
    """``!function path``: lmms-eval imports ``path`` (a dotted module path plus attribute)."""
    return _Function(path)


def dump_task_yaml(config: dict) -> str:
    """A task config as YAML text, ``!function`` references included."""
    return yaml.dump(config, Dumper=_TaskDumper, sort_keys=False, allow_unicode=True, width=1000)


def _lmms_task_yaml(relative: str) -> str:
    """Absolute path of one of lmms-eval's installed task YAMLs (the overlay ``include``s it)."""
    import lmms_eval.tasks

    path = Path(lmms_eval.tasks.__file__).parent / relative
    if not path.is_file():
        raise UserError(f"lmms-eval has no {relative}; llava-more needs lmms-eval 0.7.x")
    return str(path)


def _mmbench_rules(language: str) -> dict:
    module = "llava_more.eval.mmbench_rules"
    return {
        "include": _lmms_task_yaml(f"mmbench/_default_template_mmbench_{language}_yaml"),
        "task": f"mmbench_{language}_dev_rules",
        "test_split": "dev",
        "dataset_name": language,
        "process_results": function(f"{module}.process_results_{language}"),
        "metric_list": [
            {
                "metric": "gpt_eval_score",
                "aggregation": function(f"{module}.aggregate_{language}"),
                "higher_is_better": True,
            },
            {"metric": "rule_unmatched", "aggregation": "mean", "higher_is_better": False},
        ],
    }


def overlay_yaml(name: str) -> str:
    """YAML text of an overlay task. It ``include``s the installed lmms-eval YAML by absolute path,
    so it is written at run time on the machine that runs it (never shipped between machines)."""
    if name == "textvqa_val_ocr":
        config = {
            "include": _lmms_task_yaml("textvqa/textvqa_val.yaml"),
            "task": "textvqa_val_ocr",
            # Replaces the whole mapping, so it repeats the default prompts with OCR switched on.
            "lmms_eval_specific_kwargs": {
                "default": {
                    "pre_prompt": "",
                    "post_prompt": "\nAnswer the question using a single word or phrase.",
                    "ocr": True,
                }
            },
            "metric_list": [
                {"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                 "ignore_case": True, "ignore_punctuation": True},
            ],
        }  # fmt: skip
    elif name in ("mmbench_en_dev_rules", "mmbench_cn_dev_rules"):
        config = _mmbench_rules(name.split("_")[1])
    else:
        raise UserError(f"no overlay task named {name!r}")
    return dump_task_yaml(config)


def write_overlays(names: list[str], out_dir: str | Path) -> list[Path]:
    """Write the overlay YAMLs the given benchmarks need into ``out_dir``; returns the files."""
    out = Path(out_dir)
    written = []
    for name in names:
        overlay = get_benchmark(name).overlay
        if overlay:
            out.mkdir(parents=True, exist_ok=True)
            path = out / f"{overlay}.yaml"
            path.write_text(overlay_yaml(overlay), encoding="utf-8")
            written.append(path)
    return written
