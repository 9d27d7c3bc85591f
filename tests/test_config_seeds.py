"""`seeds`: each experiment trains once per seed; a study without seeds keeps its ids, paths and
commands; seed 0 is the unseeded training; the DAG and the report follow."""

from __future__ import annotations

import copy
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from llava_more import paths
from llava_more.cli import main
from llava_more.config import parse_params
from llava_more.errors import ConfigError
from llava_more.report.samples import ColumnSamples
from tests.workspace import BIN, make_workspace, run

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "params.yaml").read_text())
DEMO_IDS = (
    "llama3.1-8b_clip-l-336_demo-lcs",
    "gemma2-2b_clip-l-336_demo-lcs",
    "phi4-mini_clip-l-336_demo-lcs",
    "phi4-mini_siglip2-so400m-384_demo-lcs",
    "phi4-mini_clip-l-336_s2_demo-lcs",
    "phi4-mini_siglip2-so400m-384_demo-recap",
)


def _with_seeds(seeds) -> dict:
    raw = copy.deepcopy(RAW)
    raw["studies"]["demo"]["seeds"] = seeds
    return raw


def test_a_study_without_seeds_keeps_its_ids_and_paths():
    study = parse_params(copy.deepcopy(RAW), base_dir=ROOT).study("demo")
    assert study.seeds is None and all(e.seed is None for e in study.experiments)
    assert tuple(e.id for e in study.experiments) == DEMO_IDS
    assert "phi4-mini_clip-l-336_s2" in study.pairs and not any("seed" in p for p in study.pairs)
    assert paths.stage_dir("demo", 2, DEMO_IDS[0]) == "runs/demo/stage2/llama3.1-8b_clip-l-336_demo-lcs"


def test_each_experiment_trains_once_per_seed_and_seed_0_is_the_unseeded_run():
    study = parse_params(_with_seeds([0, 1, 2]), base_dir=ROOT).study("demo")
    assert study.seeds == (0, 1, 2)
    ids = [e.id for e in study.experiments]
    assert ids[:3] == [DEMO_IDS[0], f"{DEMO_IDS[0]}_seed1", f"{DEMO_IDS[0]}_seed2"]
    assert len(ids) == 3 * len(DEMO_IDS) and set(DEMO_IDS) <= set(ids)
    # Each seed has its own initial model (the projector's random init); seed 0's is the plain one.
    assert {"llama3.1-8b_clip-l-336", "llama3.1-8b_clip-l-336_seed1", "llama3.1-8b_clip-l-336_seed2"} <= set(
        study.pairs
    )
    assert study.pairs["llama3.1-8b_clip-l-336_seed2"].seed == 2
    # Tables and eval_untrained name every seed's run.
    assert len(study.tables["table1_llm"]) == 9 and len(study.eval_untrained) == 9
    # The claims are about rows, which seeds do not multiply.
    assert len(study.findings) == len(RAW["studies"]["demo"]["findings"])


@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        ([0, 0], r"\[1\]: seed 0 is listed twice"),
        ([-1], r"\[0\]: a seed must be 0 or more"),
        ([True], r"\[0\]: expected a number"),
        ([], ": expected a non-empty list"),
        (3, ": expected a non-empty list"),
    ],
)
def test_bad_seeds_are_config_errors_naming_the_key(seeds, message):
    with pytest.raises(ConfigError, match=r"^studies\.demo\.seeds" + message):
        parse_params(_with_seeds(seeds), base_dir=ROOT)


def _dry_run(ws: Path, study: str) -> str:
    return run([str(BIN / "snakemake"), "--cores", "1", "--dry-run", "--printshellcmds", "--forceall",
                "--config", f"study={study}"], ws).stdout  # fmt: skip


def test_the_dag_trains_every_seed_and_unseeded_commands_are_unchanged(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    raw = yaml.safe_load((ws / "params.yaml").read_text())
    raw["studies"]["seeded"] = {**copy.deepcopy(raw["studies"]["demo"]), "seeds": [0, 1]}
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    plain, seeded = _dry_run(ws, "demo"), _dry_run(ws, "seeded")

    def counts(out: str) -> dict[str, int]:
        return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", out[out.index("job ") :], re.M)}

    assert counts(seeded)["train"] == 2 * counts(plain)["train"]
    assert counts(seeded)["init_model"] == 2 * counts(plain)["init_model"]
    assert counts(seeded)["report"] == 1
    commands = [line for line in seeded.splitlines() if " train --stage " in line or " init-model " in line]
    seed1 = [c for c in commands if "_seed1" in c]
    assert seed1 and all(" --seed 1 " in c for c in seed1)
    assert all("--seed" not in c for c in commands if "_seed1" not in c)  # seed 0: the unseeded command
    # A study without seeds runs exactly the commands it ran before seeds existed: no --seed anywhere.
    assert "--seed" not in "\n".join(
        line for line in plain.splitlines() if " train " in line or "init-model" in line
    )
    assert f"--findings {paths.findings('demo')} --html {paths.report_html('demo')}" in plain


def test_the_report_averages_the_seeds_into_one_row(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_with_seeds([0, 1]), sort_keys=False))
    study = parse_params(_with_seeds([0, 1]), base_dir=ROOT).study("demo")
    rng = np.random.default_rng(0)
    for stage in (1, 2):
        for exp in study.experiments:
            x = (rng.random(100) < (0.6 if stage == 2 else 0.05)).astype(float)
            gqa = ColumnSamples("mean", [str(i) for i in range(100)], {"x": x})
            path = tmp_path / "eval" / f"stage{stage}" / exp.id / "scores.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"columns": {"GQA": gqa.point()}, "samples": {"GQA": gqa.to_json()}}))
    code = main(["report", "--params", str(params), "--study", "demo", "--scores-dir", str(tmp_path / "eval"),
                 "--out", str(tmp_path / "tables"), "--bootstrap", "200"])  # fmt: skip
    assert code == 0
    with open(tmp_path / "tables" / "table2_vision.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    clip = next(r for r in rows if r["row"] == "CLIP ViT-L/14")
    assert clip["seeds"] == "0;1"
    assert clip["experiments"] == "phi4-mini_clip-l-336_demo-lcs;phi4-mini_clip-l-336_demo-lcs_seed1"
    assert clip["GQA_seed_sd"] != ""
