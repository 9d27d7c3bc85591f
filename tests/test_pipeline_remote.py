"""Two small studies through one DVC remote, and S2 scales end to end.

A scratch workspace of its own (tests/test_pipeline.py's shrunk studies) in which Snakemake runs
`ci-b` (the Phi-4 twin on the `ci` data) and `ci-s2` (explicit S2 scales), used in order:

1. The S2 study's models are built with those scales: the projector reads one feature map per scale.
2. Both studies pushed to one DVC remote; a second clone pulls either by name (`make pull STUDY=...`)
   to identical artifacts, after which `snakemake -n` has nothing to do, `dvc status` is clean, and an
   edit there still reruns what it changes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.test_pipeline import (
    DVC,
    S2_SCALES,
    edit_params,
    git_commit,
    make,
    planned,
    small_workspace,
    snakemake,
    stages,
)
from tests.workspace import run, tree_digest, tree_digest_file

EXP_B = "phi4-mini_clip-l-336_ci-lcs"
EXP_S2 = "llama3.1-8b_clip-l-336_s2_ci-lcs"
STUDIES = ("ci-b", "ci-s2")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = small_workspace(tmp_path_factory)
    for study in STUDIES:
        snakemake(ws, study, "all")
        run([DVC, "commit", "--force", *stages(ws, study)], ws)  # Snakemake built it; DVC records it
    return ws


@pytest.mark.slow
def test_a_study_with_explicit_s2_scales_trains_a_model_with_those_scales(workspace):
    from safetensors import safe_open

    for stage in (1, 2):
        model = workspace / f"runs/ci-s2/stage{stage}/{EXP_S2}"
        assert json.loads((model / "llava_more.json").read_text())["s2_scales"] == S2_SCALES
        hidden = json.loads((model / "config.json").read_text())["vision_config"]["hidden_size"]
        widths = []
        for shard in model.glob("*.safetensors"):
            with safe_open(shard, "pt") as f:
                widths += [
                    f.get_slice(k).get_shape()[1] for k in f.keys() if "projector.linear_1.weight" in k
                ]
        # The projector reads one feature map per scale, stacked on channels: 2 x the encoder's width.
        assert widths == [len(S2_SCALES) * hidden], stage
    assert (workspace / "results/ci-s2/tables/table1_llm.csv").is_file()


@pytest.mark.slow
def test_two_studies_share_one_remote_and_a_clone_pulls_either_by_name(workspace, tmp_path):
    for study in STUDIES:
        make(workspace, "push", study)
    git_commit(workspace, "dvc.lock of both studies")
    # Every declared output of a study (datasets, model bundles, scores, tables), file or folder.
    # Scratch that is not an output (resumable checkpoints, lmms-eval's raw logs) is not DVC's to keep.
    dvc_stages = yaml.safe_load((workspace / "dvc.yaml").read_text())["stages"]

    def digests(root: Path, study: str) -> dict[str, dict[str, str]]:
        outs = sorted({o for name in stages(workspace, study) for o in dvc_stages[name]["outs"]})
        return {o: tree_digest(root / o) if (root / o).is_dir() else tree_digest_file(root / o) for o in outs}

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(workspace), str(clone)], tmp_path)
    for study in reversed(STUDIES):
        make(clone, "pull", study)
        assert digests(clone, study) == digests(workspace, study)
        assert planned(clone, study) == [], f"{study}: Snakemake wants to rerun after the pull"
        assert "up to date" in make(clone, "status", study).stdout, f"{study}: dvc status is not clean"
    # A pulled study is tracked like a built one: an edit in the clone reruns what it changes.
    edit_params(clone, lambda raw: raw["protocols"]["ci"]["stage2"].update(lr=3.0e-4))
    assert ("train", f"runs/ci-b/stage2/{EXP_B}") in planned(clone, "ci-b")
