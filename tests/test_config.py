"""params.yaml validation: every kind of mistake stops early with a message naming the key."""

from __future__ import annotations

import copy
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llava_more.config import load_params, parse_params
from llava_more.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "params.yaml").read_text())


def parse(raw, **kw):
    return parse_params(raw, base_dir=ROOT, **kw)


def test_repository_params_are_valid():
    params = load_params(ROOT / "params.yaml")
    study = params.study()
    assert study.name == params.default_study == "demo"
    assert study.experiments, "the demo study has experiments"
    for rows in study.tables.values():
        assert set(rows) <= {e.id for e in study.experiments}


def test_experiment_blocks_expand_as_a_matrix_and_deduplicate():
    raw = copy.deepcopy(RAW)
    raw["studies"]["demo"]["experiments"] = [
        {
            "llm": ["llama3.1-8b", "gemma2-2b"],
            "vision": ["clip-l-336", "siglip2-so400m-384"],
            "pretrain": "demo-lcs",
        },
        {"llm": "llama3.1-8b", "vision": "clip-l-336", "pretrain": "demo-lcs"},  # duplicate of the first
        {"llm": "llama3.1-8b", "vision": "clip-l-336", "s2": [False, True], "pretrain": "demo-lcs"},
    ]
    raw["studies"]["demo"]["tables"] = {"table3_s2": {"llm": "llama3.1-8b", "vision": "clip-l-336"}}
    del raw["studies"]["demo"]["findings"]  # its claims name the demo's own experiments
    study = parse(raw).study("demo")
    ids = [e.id for e in study.experiments]
    assert ids == [
        "llama3.1-8b_clip-l-336_demo-lcs",
        "llama3.1-8b_siglip2-so400m-384_demo-lcs",
        "gemma2-2b_clip-l-336_demo-lcs",
        "gemma2-2b_siglip2-so400m-384_demo-lcs",
        "llama3.1-8b_clip-l-336_s2_demo-lcs",
    ]
    assert study.tables["table3_s2"] == (
        "llama3.1-8b_clip-l-336_demo-lcs",
        "llama3.1-8b_clip-l-336_s2_demo-lcs",
    )
    # The S2 and non-S2 variants start from different initial models.
    assert set(study.pairs) == {
        "llama3.1-8b_clip-l-336",
        "llama3.1-8b_siglip2-so400m-384",
        "gemma2-2b_clip-l-336",
        "gemma2-2b_siglip2-so400m-384",
        "llama3.1-8b_clip-l-336_s2",
    }


def _broken(edit):
    raw = copy.deepcopy(RAW)
    edit(raw)
    return raw


BAD = {
    "unknown top-level key": (
        lambda r: r.update(studie={}),
        r"studie: unknown key \(did you mean 'studies'\?\)",
    ),
    "unknown key in an experiment": (
        lambda r: r["studies"]["demo"]["experiments"][0].update(vison="clip-l-336"),
        r"studies\.demo\.experiments\[0\]\.vison: unknown key \(did you mean 'vision'\?\)",
    ),
    "unknown protocol key": (
        lambda r: r["protocols"]["demo"]["stage1"].update(learning_rate=1.0),
        r"protocols\.demo\.stage1\.learning_rate: unknown key",
    ),
    "wrong type": (
        lambda r: r["protocols"]["demo"]["stage2"].update(global_batch="big"),
        r"protocols\.demo\.stage2\.global_batch: expected int",
    ),
    "system prompt not a bool": (
        lambda r: r["studies"]["demo"].update(system_prompt="none"),
        r"studies\.demo\.system_prompt: expected bool, got 'none'",
    ),
    "batch not divisible": (
        lambda r: r["protocols"]["demo"]["stage2"].update(per_device_batch=5),
        r"global_batch 32 is not a multiple of per_device_batch 5",
    ),
    "unknown pretrain set": (
        lambda r: r["studies"]["demo"]["experiments"][0].update(pretrain="demo-lsc"),
        r"experiments\[0\]\.pretrain: 'demo-lsc' is not a pretrain_data entry",
    ),
    "missing dataset path": (
        lambda r: r["pretrain_data"]["lcs"].update(local_path="/nonexistent/LLaVA-Pretrain"),
        r"pretrain_data\.lcs\.local_path: /nonexistent/LLaVA-Pretrain does not exist",
    ),
    "unknown study": (lambda r: r.update(study="papr"), r"study: 'papr' is not one of the defined studies"),
    "table matching nothing": (
        lambda r: r["studies"]["demo"].update(tables={"table2_vision": {"llm": "vicuna-7b-v1.5"}}),
        r"studies\.demo\.tables\.table2_vision: the filter .* matches no experiment",
    ),
    "unknown demo kind": (
        lambda r: r["pretrain_data"]["demo-lcs"].update(kind="blip"),
        r"pretrain_data\.demo-lcs\.kind: 'blip' is not one of lcs, alttext, recap, mix",
    ),
    # Rules of the stage recipe that only the trainer used to check.
    "micro_tokens without packing": (
        lambda r: r["protocols"]["demo"]["stage1"].update(micro_tokens=512),
        r"protocols\.demo\.stage1\.micro_tokens: 512 needs packing: true",
    ),
    "micro_tokens below max_length": (
        lambda r: r["protocols"]["demo"]["stage2"].update(micro_tokens=100),
        r"protocols\.demo\.stage2\.micro_tokens: 100 must be at least max_length \(256\)",
    ),
    "pack_tokens without packing": (
        lambda r: r["protocols"]["demo"]["stage1"].update(pack_tokens=4096),
        r"protocols\.demo\.stage1\.pack_tokens: needs packing: true",
    ),
    "zero checkpoint interval": (
        lambda r: r["protocols"]["demo"]["stage1"].update(save_every_steps=0),
        r"protocols\.demo\.stage1\.save_every_steps: must be positive",
    ),
    "lora in stage 1": (
        lambda r: r["protocols"]["demo"]["stage1"].update(lora_r=8),
        r"protocols\.demo\.stage1\.lora_r: LoRA is a stage-2 option",
    ),
    "negative lora rank": (
        lambda r: r["protocols"]["demo"]["stage2"].update(lora_r=-4),
        r"protocols\.demo\.stage2\.lora_r: must be >= 0",
    ),
    # Benchmarks: names the registry does not know, and suite settings.
    "unknown benchmark": (
        lambda r: r["benchmark_suites"]["real"]["tasks"].append("gqa_testdev"),
        r"benchmark_suites\.real\.tasks\[10\]: unknown benchmark 'gqa_testdev'",
    ),
    "misspelt demo benchmark, short form": (
        lambda r: r["benchmark_suites"].update({"mine": ["demo_gqa", "demo_popе"]}),
        r"benchmark_suites\.mine\[1\]: unknown benchmark 'demo_popе' \(did you mean 'demo_pope'\?\)",
    ),
    "eval batch size zero": (
        lambda r: r["benchmark_suites"]["demo"].update(batch_size=0),
        r"benchmark_suites\.demo\.batch_size: must be at least 1",
    ),
    "eval dtype": (
        lambda r: r["benchmark_suites"]["demo"].update(dtype="fp8"),
        r"benchmark_suites\.demo\.dtype: 'fp8' is not one of auto, float32, bfloat16, float16",
    ),
    # Names that become paths, wildcards, shell words and DVC keys.
    "dataset name with a trailing space": (
        lambda r: r["pretrain_data"].update({"demo-lcs ": r["pretrain_data"]["demo-lcs"]}),
        r"pretrain_data\.demo-lcs : the name 'demo-lcs ' is not allowed",
    ),
    "dataset name with a slash": (
        lambda r: r["instruct_data"].update({"../instruct": r["instruct_data"]["demo-instruct"]}),
        r"instruct_data\.\.\./instruct: the name '\.\./instruct' is not allowed",
    ),
    "study name with a dot": (
        lambda r: r["studies"].update({"demo.v2": r["studies"]["demo"]}),
        r"studies\.demo\.v2: the name 'demo\.v2' is not allowed",
    ),
    "protocol name with a shell character": (
        lambda r: r["protocols"].update({"demo;rm": r["protocols"]["demo"]}),
        r"protocols\.demo;rm: the name 'demo;rm' is not allowed",
    ),
    "suite name with a space": (
        lambda r: r["benchmark_suites"].update({"my suite": ["demo_gqa"]}),
        r"benchmark_suites\.my suite: the name 'my suite' is not allowed",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_params_name_the_problem(case):
    edit, message = BAD[case]
    with pytest.raises(ConfigError, match=message):
        parse(_broken(edit), check_backbones=False)


BAD_BACKBONES = {
    "unknown llm": (
        lambda r: r["studies"]["demo"]["experiments"][0].update(llm="llama4-8b"),
        r"experiments\[0\]\.llm: unknown LLM id 'llama4-8b'; valid ids: .*llama3\.1-8b",
    ),
    "unknown vision": (
        lambda r: r["studies"]["demo"]["experiments"][0].update(vision="clip-b-224"),
        r"experiments\[0\]\.vision: unknown vision.* id 'clip-b-224'; valid ids: .*clip-l-336",
    ),
    "bad s2 scales": (
        lambda r: r["studies"]["demo"]["experiments"][0].update(s2=True, s2_scales=[48, 100]),
        r"experiments\[0\]\.s2_scales: .*100",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_BACKBONES))
def test_bad_backbones_list_the_valid_ids(case):
    edit, message = BAD_BACKBONES[case]
    with pytest.raises(ConfigError, match=message):
        parse(_broken(edit))


def test_cli_reports_a_bad_params_file_in_one_line_within_five_seconds(tmp_path):
    bad = _broken(lambda r: r["studies"]["demo"]["experiments"][0].update(vision="clip-b-224"))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(bad))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, "-m", "llava_more", "check-params", "--params", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the command, not wall time: the same on a machine busy with other tests
    elapsed = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "clip-b-224" in lines[0] and "clip-l-336" in lines[0], proc.stderr
    assert elapsed < 5, f"validation took {elapsed:.1f} CPU seconds"


@pytest.mark.parametrize(
    "edit, key",
    [
        (
            lambda r: r["benchmark_suites"]["demo"]["tasks"].append("demo_gqa2"),
            "benchmark_suites.demo.tasks[10]",
        ),
        (
            lambda r: r["pretrain_data"].update({"demo lcs": r["pretrain_data"]["demo-lcs"]}),
            "pretrain_data.demo lcs",
        ),
        (
            lambda r: r["protocols"]["ci"]["stage2"].update(micro_tokens=256),
            "protocols.ci.stage2.micro_tokens",
        ),
    ],
    ids=["unknown benchmark", "unsafe name", "train-only rule"],
)
def test_check_params_fails_naming_the_key(tmp_path, capsys, edit, key):
    from llava_more.cli import main

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_broken(edit)))
    assert main(["check-params", "--params", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err, err


def test_installed_lmms_eval_defines_every_real_benchmark():
    from llava_more.config.schema import check_benchmarks_installed
    from llava_more.eval.benchmarks import lmms_eval_task_names

    params = parse(copy.deepcopy(RAW))
    check_benchmarks_installed(params)  # the repository's suites: every task exists
    installed = lmms_eval_task_names()
    assert {"gqa", "pope", "mme", "seedbench", "mmmu_val", "textvqa_val"} <= installed


def test_a_benchmark_the_installed_lmms_eval_lacks_is_refused(monkeypatch):
    from llava_more.config import schema
    from llava_more.eval import benchmarks

    monkeypatch.setattr(benchmarks, "lmms_eval_task_names", lambda: {"gqa"})
    with pytest.raises(
        ConfigError,
        match=r"benchmark_suites\.real\.tasks\[1\]: benchmark 'scienceqa_img' needs "
        r"lmms-eval's task 'scienceqa_img', which the installed lmms-eval does not",
    ):
        schema.check_benchmarks_installed(parse(copy.deepcopy(RAW)))


def test_the_snakefile_refuses_config_keys_it_does_not_read(tmp_path):
    import shutil

    for name in ("Snakefile", "workflow", "reference"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(ROOT / name, tmp_path / name)
    shutil.copy2(ROOT / "params.yaml", tmp_path / "params.yaml")
    snakemake = Path(sys.executable).with_name("snakemake")
    out = subprocess.run(
        [str(snakemake), "-n", "--config", "study=ci", "lr=0.1", "stuyd=paper"], cwd=tmp_path, capture_output=True,
        text=True,
    )  # fmt: skip
    assert out.returncode != 0
    said = out.stdout + out.stderr
    assert "--config lr, stuyd: not a setting of this workflow (it reads only: study)" in said


def test_a_recaptioned_set_names_its_source_and_model():
    raw = copy.deepcopy(RAW)
    raw["pretrain_data"]["lcs-recap"] = {"source": "recaption", "from": "lcs", "model": "runs/x/stage2/y"}
    assert parse(raw, check_backbones=False).pretrain_data["lcs-recap"].get("from") == "lcs"
    raw["pretrain_data"]["lcs-recap"]["from"] = "lsc"
    with pytest.raises(
        ConfigError, match=r"pretrain_data\.lcs-recap\.from: 'lsc' is not another pretrain_data entry"
    ):
        parse(raw, check_backbones=False)


def test_the_recaption_rule_plans_a_recaptioned_set(tmp_path):
    """A study on a recaptioned set plans: fetch the source, recaption it, then train on it."""
    import shutil

    raw = copy.deepcopy(RAW)
    raw["pretrain_data"]["demo-lcs-recap"] = {
        "source": "recaption",
        "from": "demo-lcs",
        "model": "some/captioner",
    }
    raw["studies"]["ci"]["experiments"] = [
        {"llm": "llama3.1-8b", "vision": "clip-l-336", "pretrain": "demo-lcs-recap"}
    ]
    raw["studies"]["ci"]["tables"] = {"table1_llm": {"vision": "clip-l-336"}}
    for name in ("Snakefile", "workflow"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(ROOT / name, tmp_path / name)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    snakemake = Path(sys.executable).with_name("snakemake")
    out = subprocess.run(
        [str(snakemake), "-n", "-p", "--config", "study=ci"], cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert (
        "llava_more recaption --model some/captioner --json data/pretrain/demo-lcs/raw/data.json"
        in out.stdout
    )
