"""What each rule declares it reads (config.lineage): an edit reruns exactly the jobs it changes.

Unit level: which jobs' declared values change under an edit of params.yaml, and the DVC keys of the
same declaration. The end-to-end check (Snakemake and DVC on a finished study) is in
``test_study_lineage.py``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from llava_more.config import LAYOUT_FIELDS, parse_params
from llava_more.config.lineage import RULES, dvc_keys, job_params

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "params.yaml").read_text())


def jobs_of(params, study_name: str) -> dict[tuple[str, tuple], dict]:
    """Every job of a study (rule, wildcards) with its declared values."""
    study = params.study(study_name)
    jobs: list[tuple[str, dict]] = []
    for exp in study.experiments:
        jobs += [("train", {"stage": s, "exp": exp.id}) for s in ("1", "2")]
        jobs += [("evaluate", {"stage": "2", "exp": exp.id})]
    jobs += [("init_model", {"pair": pair}) for pair in study.pairs]
    jobs += [("demo_pretrain_data", {"name": n}) for n in study.pretrain_sets]
    jobs += [
        ("demo_instruct_data", {"name": study.instruct}),
        ("report", {}),
        ("warm_vision", {"vision": "x"}),
    ]
    jobs += [("validate_data", {"kind": "pretrain", "name": n}) for n in study.pretrain_sets]
    jobs += [("demo_benchmarks", {}), ("demo_tokenizer", {})]
    return {(rule, tuple(sorted(w.items()))): job_params(params, study, rule, w) for rule, w in jobs}


def changed_jobs(edit, study: str = "demo") -> set[tuple[str, tuple]]:
    before = jobs_of(parse_params(copy.deepcopy(RAW), base_dir=ROOT), study)
    raw = copy.deepcopy(RAW)
    edit(raw)
    after = jobs_of(parse_params(raw, base_dir=ROOT), study)
    return {job for job in before if before[job] != after[job]}


def test_a_stage2_hyperparameter_changes_exactly_the_stage2_trainings():
    def edit(raw):
        raw["protocols"]["demo"]["stage2"]["lr"] = 1.0e-3

    changed = changed_jobs(edit)
    demo = parse_params(copy.deepcopy(RAW), base_dir=ROOT).study("demo")
    assert changed == {("train", (("exp", e.id), ("stage", "2"))) for e in demo.experiments}


def test_a_stage1_hyperparameter_changes_exactly_the_stage1_trainings():
    def edit(raw):
        raw["protocols"]["demo"]["stage1"]["max_length"] = 200

    assert {rule for rule, w in changed_jobs(edit)} == {"train"}
    assert {dict(w)["stage"] for _, w in changed_jobs(edit)} == {"1"}


@pytest.mark.parametrize(
    "edit",
    [
        lambda raw: raw["protocols"]["demo"]["stage2"].update(per_device_batch=8),
        lambda raw: raw["protocols"]["demo"]["stage2"].update(packing=False),
        lambda raw: raw["protocols"]["demo"]["stage2"].update(micro_tokens=512),
        lambda raw: raw["protocols"]["demo"]["stage1"].update(save_every_steps=7),
        lambda raw: raw["protocols"]["demo"]["stage1"].update(fused_loss=True),
        lambda raw: raw["benchmark_suites"]["demo"].update(batch_size=1),
        lambda raw: raw["protocols"]["ci"]["stage2"].update(lr=0.5),  # another protocol
        lambda raw: raw["studies"]["paper"].update(eval_samples=3),  # another study
    ],
    ids=["per_device_batch", "packing", "micro_tokens", "save_every_steps", "fused_loss", "eval batch size",
         "other protocol", "other study"],
)  # fmt: skip
def test_fields_that_change_no_result_change_no_job(edit):
    assert changed_jobs(edit) == set()


def test_layout_fields_are_exactly_the_ones_the_lineage_leaves_out():
    params = parse_params(copy.deepcopy(RAW), base_dir=ROOT)
    demo = params.study("demo")
    declared = job_params(params, demo, "train", {"stage": "2", "exp": demo.experiments[0].id})
    fields = {key.rsplit(".", 1)[1] for key in declared}
    assert fields.isdisjoint(LAYOUT_FIELDS)
    assert {"lr", "epochs", "global_batch", "max_length", "max_grad_norm", "lora_r"} <= fields
    assert declared["protocols.demo.stage2.lr"] == 3.0e-3


@pytest.mark.parametrize(
    "edit, rules",
    [
        (lambda raw: raw["benchmark_suites"]["demo"].update(max_new_tokens=8), {"evaluate"}),
        (lambda raw: raw["benchmark_suites"]["demo"].update(dtype="bfloat16"), {"evaluate"}),
        (lambda raw: raw["studies"]["demo"].update(eval_samples=5), {"evaluate"}),
        (lambda raw: raw["studies"]["demo"].update(system_prompt=True), {"init_model"}),
        (lambda raw: raw["pretrain_data"]["demo-lcs"].update(seed=99), {"demo_pretrain_data"}),
        (lambda raw: raw["instruct_data"]["demo-instruct"].update(max_turns=2), {"demo_instruct_data"}),
        (lambda raw: raw["validation"].update(max_bad_fraction=0.05), {"validate_data"}),
        (lambda raw: raw["demo_vision"].update(steps=10), {"warm_vision"}),
        (lambda raw: raw["demo_benchmarks"].update(seed=1), {"demo_benchmarks"}),
        (lambda raw: raw["demo_tokenizer"].update(vocab_size=1000), {"demo_tokenizer"}),
    ],
    ids=["max_new_tokens", "eval dtype", "eval_samples", "system prompt", "data seed", "max_turns", "max_bad",
         "vision warm-up", "benchmark seed", "vocab"],
)  # fmt: skip
def test_each_result_setting_changes_its_rule(edit, rules):
    assert {rule for rule, _ in changed_jobs(edit)} == rules


def test_explicit_s2_scales_are_declared_for_that_pair_only():
    raw = copy.deepcopy(RAW)
    raw["studies"]["demo"]["experiments"][2]["s2_scales"] = [48, 96]
    params = parse_params(raw, base_dir=ROOT)
    demo = params.study("demo")
    s2_pair = "phi4-mini_clip-l-336_s2"
    declared = job_params(params, demo, "init_model", {"pair": s2_pair})
    assert declared["studies.demo.experiments.2.s2_scales"] == [48, 96]
    assert "studies.demo.experiments.2.s2_scales" in dvc_keys(params, demo, "init_model", {"pair": s2_pair})
    other = job_params(params, demo, "init_model", {"pair": "phi4-mini_clip-l-336"})
    assert not any("s2_scales" in key for key in other)


def test_dvc_keys_are_the_written_keys_of_the_same_declaration():
    params = parse_params(copy.deepcopy(RAW), base_dir=ROOT)
    demo = params.study("demo")
    wildcards = {"stage": "2", "exp": demo.experiments[0].id}
    keys = dvc_keys(params, demo, "train", wildcards)
    # Keys params.yaml spells out; max_grad_norm (a default) cannot be tracked by DVC.
    assert "protocols.demo.stage2.lr" in keys and "protocols.demo.stage2.max_grad_norm" not in keys
    assert set(keys) <= set(job_params(params, demo, "train", wildcards))
    assert dvc_keys(params, demo, "evaluate", wildcards) == [
        "benchmark_suites.demo.tasks", "benchmark_suites.demo.dtype", "benchmark_suites.demo.max_new_tokens",
        "studies.demo.eval_samples",
    ]  # fmt: skip


def test_a_suite_in_the_short_list_form_is_tracked_as_a_whole():
    raw = copy.deepcopy(RAW)
    raw["benchmark_suites"]["demo"] = raw["benchmark_suites"]["demo"]["tasks"]  # the short list form
    params = parse_params(raw, base_dir=ROOT)
    demo = params.study("demo")
    assert dvc_keys(params, demo, "evaluate", {"stage": "2", "exp": demo.experiments[0].id})[0] == (
        "benchmark_suites.demo"
    )


def test_every_rule_of_the_workflow_declares_what_it_reads():
    import re

    rules = set()
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        rules |= set(re.findall(r"^rule (\w+):", smk.read_text(), re.M))
        for rule, body in re.findall(r"^rule (\w+):\n((?:[ \t].*\n|\n)*)", smk.read_text(), re.M):
            assert f'declared("{rule}")' in body, f"rule {rule} does not pass its declared params"
    assert rules == set(RULES)
