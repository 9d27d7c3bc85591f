"""The benchmark registry, the overlay tasks for real lmms-eval tasks, and offline MMBench scoring."""

from __future__ import annotations

from pathlib import Path

import pytest

from llava_more.config import load_params
from llava_more.errors import EvaluationFailed, UserError
from llava_more.eval import mmbench_rules
from llava_more.eval.benchmarks import BENCHMARKS, COLUMNS, columns_of, get_benchmark, write_overlays
from llava_more.eval.demo_tasks import DEMO_TASKS
from llava_more.eval.run import run_lmms_eval

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def test_real_and_demo_suites_fill_all_thirteen_columns():
    suites = load_params(PARAMS).benchmark_suites
    assert columns_of(list(suites["real"].tasks)) == list(COLUMNS)
    assert columns_of(list(DEMO_TASKS)) == list(COLUMNS)
    assert set(suites["demo"].tasks) <= set(BENCHMARKS)


def test_column_sources():
    assert get_benchmark("pope").columns["POPE"].metric == "pope_f1_score,none"  # the paper prints F1
    assert get_benchmark("pope").columns["POPE"].scale == 100
    assert get_benchmark("mme").columns["MME-P"].scale == 1
    assert get_benchmark("textvqa_val").task == "textvqa_val_ocr"
    assert get_benchmark("mmbench_en_dev").task == "mmbench_en_dev_rules"
    with pytest.raises(UserError, match="unknown benchmark 'gqa_typo'"):
        get_benchmark("gqa_typo")


def test_overlays_load_through_lmms_eval_with_the_settings_changed(tmp_path):
    from lmms_eval.utils import load_yaml_config

    written = write_overlays(["gqa", "textvqa_val", "mmbench_en_dev", "mmbench_cn_dev"], tmp_path)
    assert sorted(p.name for p in written) == [
        "mmbench_cn_dev_rules.yaml",
        "mmbench_en_dev_rules.yaml",
        "textvqa_val_ocr.yaml",
    ]

    textvqa = load_yaml_config(str(tmp_path / "textvqa_val_ocr.yaml"))
    assert textvqa["task"] == "textvqa_val_ocr" and textvqa["test_split"] == "validation"
    assert textvqa["dataset_path"].endswith("textvqa")  # the real data, from the included YAML
    kwargs = textvqa["lmms_eval_specific_kwargs"]["default"]
    doc = {"question": "what brand is this?", "ocr_tokens": ["acme", "cola"]}
    assert textvqa["doc_to_text"](doc, kwargs) == (
        "What brand is this?\nReference OCR token: acme, cola\nAnswer the question using a single word or phrase."
    )

    mmbench = load_yaml_config(str(tmp_path / "mmbench_cn_dev_rules.yaml"))
    assert mmbench["dataset_name"] == "cn" and mmbench["test_split"] == "dev"
    assert mmbench["process_results"] is mmbench_rules.process_results_cn
    assert [m["metric"] for m in mmbench["metric_list"]] == ["gpt_eval_score", "rule_unmatched"]


def _mmbench_doc(index: int, answer: str) -> dict:
    return {"index": index, "question": "What color is the circle?", "hint": None, "answer": answer,
            "A": "red", "B": "blue", "C": "green", "D": None, "category": "attribute_recognition",
            "L2-category": "finegrained_perception (instance-level)", "source": "demo", "split": "dev"}  # fmt: skip


def test_mmbench_offline_counts_unreadable_answers_wrong_never_random():
    docs = [_mmbench_doc(i, "B") for i in range(4)]
    predictions = ["B", "The answer is B.", "blue", "I cannot tell."]  # letter, phrase, option text, nothing
    processed = [mmbench_rules.process_results_en(d, [p]) for d, p in zip(docs, predictions, strict=True)]
    assert [p["rule_unmatched"] for p in processed] == [0.0, 0.0, 0.0, 1.0]
    results = [p["gpt_eval_score"] for p in processed]
    # Repeated runs give the same score: no random letter is ever drawn for the unreadable answer.
    assert {mmbench_rules.aggregate_en(results) for _ in range(5)} == {75.0}
    wrong = [mmbench_rules.process_results_cn(_mmbench_doc(0, "A"), ["B"])["gpt_eval_score"]]
    assert mmbench_rules.aggregate_cn(wrong) == 0.0


def test_gpt_judged_mmbench_needs_an_api_key(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    bundle = tmp_path / "model"
    bundle.mkdir()
    (bundle / "llava_more.json").write_text("{}")
    with pytest.raises(EvaluationFailed, match="mmbench_en_dev_gpt: needs OPENAI_API_KEY"):
        run_lmms_eval(bundle, ["mmbench_en_dev_gpt"], None, tmp_path / "out", batch_size=1)


def test_overlay_tasks_cannot_share_a_run_with_local_tasks(tmp_path):
    bundle = tmp_path / "model"
    bundle.mkdir()
    (bundle / "llava_more.json").write_text("{}")
    (tmp_path / "bench").mkdir()
    with pytest.raises(UserError, match="textvqa_val need llava-more's own task files"):
        run_lmms_eval(bundle, ["textvqa_val", "demo_gqa"], tmp_path / "bench", tmp_path / "out", batch_size=1)


def _task_yaml(task: str) -> Path:
    """The installed lmms-eval YAML that defines ``task``."""
    import re

    import lmms_eval.tasks

    for path in sorted(Path(lmms_eval.tasks.__file__).parent.rglob("*.yaml")):
        if re.search(rf"^task:\s*['\"]?{re.escape(task)}['\"]?\s*$", path.read_text(errors="replace"), re.M):
            return path
    raise AssertionError(f"the installed lmms-eval defines no task {task!r}")


def _produced_keys(config: dict) -> set[str]:
    """The ``<metric>,<filter>`` keys lmms-eval writes to results[task] for a task config."""
    filters = [f["name"] for f in config.get("filter_list") or []] or ["none"]
    return {f"{m['metric']},{f}" for m in config.get("metric_list") or [] for f in filters}


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_every_metric_a_column_reads_is_one_its_task_produces(name, tmp_path):
    """Read from the task configs themselves: lmms-eval's installed YAMLs (real tasks), our overlays
    (written as `evaluate` writes them) and the demo tasks' generated configs."""
    from lmms_eval.utils import load_yaml_config

    from llava_more.eval.demo_tasks import task_configs

    bench = get_benchmark(name)
    if bench.task in DEMO_TASKS:
        config = task_configs(bench.task)[bench.task]
    elif bench.overlay:
        config = load_yaml_config(str(write_overlays([name], tmp_path)[0]))
    else:
        config = load_yaml_config(str(_task_yaml(bench.task)))
    assert config["task"] == bench.task
    produced = _produced_keys(config)
    for column, spec in bench.columns.items():
        assert spec.metric in produced, (
            f"{name} column {column} reads {spec.metric}; the task writes {produced}"
        )
    for column, metric in bench.flags.items():
        assert metric in produced, f"{name} flag of {column} reads {metric}; the task writes {produced}"
