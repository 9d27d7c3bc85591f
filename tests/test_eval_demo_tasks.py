"""The demo benchmarks: files, determinism, and lmms-eval's own scoring code reading them as real data."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from llava_more.data.demo_questions import near_colors
from llava_more.data.demo_world import Scene, Shape, has_object
from llava_more.errors import UserError
from llava_more.eval.demo_docs import (
    MME_COGNITION,
    MME_PERCEPTION,
    POPE_CATEGORIES,
    _negative,
    mme_docs,
    pope_docs,
)
from llava_more.eval.demo_tasks import DEMO_TASKS, MANIFEST, generate_demo_benchmarks

# What a perfect answerer scores, in lmms-eval's units (MME: acc + acc+ per category, summed).
N = 16


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    generate_demo_benchmarks(out, N, seed=7)
    return out


@pytest.fixture(scope="module")
def tasks(bench):
    from lmms_eval.tasks import TaskManager, get_task_dict

    manager = TaskManager(include_path=str(bench), include_defaults=False, model_name="llava_more")
    names = [*DEMO_TASKS, "demo_pope_adv", "demo_pope_pop", "demo_pope_random"]
    return get_task_dict(names, manager)


def _score(task, answer_of) -> dict[str, float]:
    """Run lmms-eval's process_results + aggregation over every doc with ``answer_of(task, doc)``."""
    per_metric: dict[str, list] = {}
    for doc in task.test_docs():
        for metric, value in task.process_results(doc, [answer_of(task, doc)]).items():
            per_metric.setdefault(metric, []).append(value)
    aggregations = task.aggregation()
    return {m: aggregations[m](values) for m, values in per_metric.items() if m in aggregations}


def _oracle(task, doc) -> str:
    return str(task.doc_to_target(doc))


def test_files_and_manifest(bench):
    manifest = json.loads((bench / MANIFEST).read_text())
    assert set(manifest["tasks"]) == set(DEMO_TASKS)
    assert manifest["tasks"]["demo_pope"]["splits"] == {
        "test": N,
        "adversarial": 6,
        "popular": 6,
        "random": 4,
    }
    for task in DEMO_TASKS:
        assert (bench / task / f"{task}.yaml").is_file()
        assert list((bench / task / "images").glob("*.png"))
    assert {p.stem for p in (bench / "demo_pope").glob("*.yaml")} == {
        "demo_pope", "demo_pope_adv", "demo_pope_pop", "demo_pope_random", "demo_pope_full"}  # fmt: skip


def test_same_seed_same_benchmark_other_seed_differs(tmp_path):
    shas = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        generate_demo_benchmarks(tmp_path / name, 4, seed=seed, tasks=["demo_gqa", "demo_mme"])
        shas.append(
            {t: e["sha256"] for t, e in json.loads((tmp_path / name / MANIFEST).read_text())["tasks"].items()}
        )
    assert shas[0] == shas[1]
    assert shas[0]["demo_gqa"] != shas[2]["demo_gqa"]


def test_bad_requests_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="demo_nope"):
        generate_demo_benchmarks(tmp_path, 4, seed=1, tasks=["demo_nope"])
    with pytest.raises(UserError, match="at least 2"):
        generate_demo_benchmarks(tmp_path, 1, seed=1)


def test_a_perfect_answerer_gets_full_marks_from_lmms_eval_scoring(tasks):
    scores = {name: _score(task, _oracle) for name, task in tasks.items()}
    for name in ("demo_gqa", "demo_scienceqa_img", "demo_textvqa", "demo_ai2d"):
        assert scores[name]["exact_match"] == pytest.approx(1.0), name
    for name in ("demo_pope", "demo_pope_adv", "demo_pope_pop", "demo_pope_random"):
        assert scores[name]["pope_f1_score"] == pytest.approx(1.0), name
    assert scores["demo_seedbench"] == {"seed_image": 1.0, "seed_video": 1.0, "seed_all": 1.0}
    assert scores["demo_mmmu"]["mmmu_acc"] == pytest.approx(1.0)
    for name in ("demo_mmbench_en", "demo_mmbench_cn"):
        assert scores[name]["gpt_eval_score"] == pytest.approx(100.0) and scores[name]["rule_unmatched"] == 0
    # MME: 200 per category (acc 100 + acc+ 100); N/2 images cycle over all 8 categories.
    assert scores["demo_mme"]["mme_perception_score"] == pytest.approx(200 * len(MME_PERCEPTION))
    assert scores["demo_mme"]["mme_cognition_score"] == pytest.approx(200 * len(MME_COGNITION))


def test_answering_yes_to_everything_is_chance_on_the_yes_no_benchmarks(tasks):
    def yes(task, doc):
        return "Yes"

    pope = _score(tasks["demo_pope"], yes)
    assert pope["pope_accuracy"] == pytest.approx(0.5) and pope["pope_yes_ratio"] == pytest.approx(0.5)
    assert pope["pope_f1_score"] == pytest.approx(2 / 3)  # precision 0.5, recall 1
    mme = _score(tasks["demo_mme"], yes)
    assert mme["mme_perception_score"] == pytest.approx(50 * len(MME_PERCEPTION))  # acc 50, acc+ 0


def test_prompts_are_the_real_tasks_formats(tasks):
    gqa = tasks["demo_gqa"]
    assert gqa.doc_to_text(gqa.test_docs()[0]).endswith(
        "\nAnswer the question using a single word or phrase."
    )
    textvqa = tasks["demo_textvqa"]
    doc = textvqa.test_docs()[0]
    assert f"\nReference OCR token: {', '.join(doc['ocr_tokens'])}" in textvqa.doc_to_text(doc)
    sqa = tasks["demo_scienceqa_img"]
    assert "\nA. " in sqa.doc_to_text(sqa.test_docs()[0])
    seed = tasks["demo_seedbench"]
    kinds = Counter(d["data_type"] for d in seed.test_docs())
    video = next(d for d in seed.test_docs() if d["data_type"] == "video")
    assert kinds["video"] == N // 4 and len(seed.doc_to_visual(video)) == 3
    mmmu = tasks["demo_mmmu"]
    assert len(mmmu.doc_to_visual(mmmu.test_docs()[0])) == 1


def test_pope_and_mme_structure():
    pope = pope_docs(30, seed=3)
    assert Counter(d["answer"] for d in pope["test"]) == {"yes": 15, "no": 15}
    assert {c: len(pope[c]) for c in POPE_CATEGORIES} == {"adversarial": 10, "popular": 10, "random": 10}
    scene = Scene(
        shapes=(Shape("circle", "red", 0, 0, "big"), Shape("square", "blue", 1, 1, "small")),
        background="white",
    )
    popularity = Counter({"green": 5, "red": 1})
    for seed in range(20):
        rng = random.Random(seed)
        color = _negative(scene, "adversarial", rng, popularity)
        assert not has_object(scene, color=color)
        assert color in near_colors("red") + near_colors("blue")  # next to a present hue
        assert _negative(scene, "popular", rng, popularity) == "green"
        assert not has_object(scene, color=_negative(scene, "random", rng, popularity))
    mme = mme_docs(32, seed=3)["test"]
    by_image = Counter(d["question_id"] for d in mme)
    assert set(by_image.values()) == {2}
    assert all({d["answer"] for d in mme if d["question_id"] == q} == {"Yes", "No"} for q in by_image)
    assert {d["category"] for d in mme} == set(MME_PERCEPTION + MME_COGNITION)
