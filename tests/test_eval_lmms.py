"""The ``llava_more`` lmms-eval model on a tiny random bundle, in-process and through real lmms-eval runs.

A random model answers garbage, so these tests check the pipeline (prompts, batching, files, metric
keys, failure detection), never a score.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from llava_more.errors import EvaluationFailed, UserError
from llava_more.eval.benchmarks import get_benchmark
from llava_more.eval.demo_tasks import generate_demo_benchmarks
from llava_more.eval.run import (
    CHILD_SCORES_FILE,
    LOG_FILE,
    RAW_DIR,
    SCORES_FILE,
    run_lmms_eval,
    scores_from_results,
)

torch.set_num_threads(1)

CORPUS = [
    "What color is the circle? red blue green yellow purple orange white black",
    "Is there a red square in the image? yes no",
    "How many shapes are there? 1 2 3. Where is the triangle? top left center bottom right",
    "A. B. C. D. Answer with the option's letter from the given choices directly.",
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    from llava_more.text.tokenizer import train_demo_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    train_demo_tokenizer(CORPUS * 10, out, vocab_size=400)
    return out


def _bundle(tokenizer_dir: Path, out: Path, llm: str, vision: str) -> Path:
    from llava_more.model.initialize import init_model

    init_model(llm, vision, size="tiny", tokenizer_dir=tokenizer_dir, out_dir=out)
    return out


@pytest.fixture(scope="module")
def bundle(tokenizer_dir, tmp_path_factory) -> Path:
    return _bundle(tokenizer_dir, tmp_path_factory.mktemp("bundle") / "model", "llama3.1-8b", "clip-l-336")


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    generate_demo_benchmarks(
        out, 10, seed=5, tasks=["demo_gqa", "demo_pope", "demo_seedbench", "demo_scienceqa_img"]
    )
    return out


@pytest.fixture(scope="module")
def lmms_tasks(benchmarks):
    from lmms_eval.tasks import TaskManager, get_task_dict

    manager = TaskManager(include_path=str(benchmarks), include_defaults=False, model_name="llava_more")
    return get_task_dict(["demo_gqa", "demo_pope", "demo_seedbench", "demo_scienceqa_img"], manager)


def _requests(model, task, limit: int):
    """lmms-eval's own requests for ``task`` (as its evaluator builds them)."""
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    model.task_dict[task.config.task] = task.dataset
    return [instance for instance in task.instances]


def test_entry_point_resolves_to_our_model():
    from lmms_eval.models import get_model

    from llava_more.eval.lmms_model import LlavaMoreLMM

    assert get_model("llava_more") is LlavaMoreLMM


@pytest.mark.parametrize(
    "pair", [None, ("gemma2-2b", "siglip-so400m-384")], ids=["llama3.1-clip", "gemma2-siglip"]
)
def test_batched_answers_equal_single_answers(pair, bundle, tokenizer_dir, tmp_path, lmms_tasks, caplog):
    from llava_more.eval.lmms_model import LlavaMoreLMM

    caplog.set_level("INFO", logger="llava_more.eval.lmms_model")
    path = bundle if pair is None else _bundle(tokenizer_dir, tmp_path / "model", *pair)
    answers = {}
    for batch_size in (1, 4):
        model = LlavaMoreLMM(pretrained=str(path), batch_size=batch_size, max_new_tokens=6)
        requests = []
        for name in ("demo_gqa", "demo_pope", "demo_seedbench"):  # seedbench brings 3-frame "videos"
            requests += _requests(model, lmms_tasks[name], limit=8)
        answers[batch_size] = model.generate_until(requests)
    assert len(answers[1]) == len(requests) == 24
    assert all(isinstance(a, str) for a in answers[1])
    assert answers[4] == answers[1]
    # each call logs where its time went (benchmarks/eval_batching.py reads these lines)
    timings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("generate_until timing:")]
    assert len(timings) == 2 and timings[1].startswith(
        "generate_until timing: 24 requests at batch 4: prepare "
    )


def test_prompt_ends_with_assistant_header_and_expands_images(bundle):
    from llava_more.eval.lmms_model import LlavaMoreLMM
    from llava_more.text import get_template

    model = LlavaMoreLMM(pretrained=str(bundle))
    ids, prompt = model._prepare_text("What color is the circle?", num_images=2)
    assert prompt.endswith(get_template("llama3.1").assistant_header)
    assert ids.count(model.image_token_id) == 2 * model.meta.image_tokens
    ids, _ = model._prepare_text("Spell cat.", num_images=0)
    assert model.image_token_id not in ids


def test_loglikelihood_is_the_sum_of_token_log_probs(bundle, lmms_tasks):
    from lmms_eval.api.instance import Instance

    from llava_more.eval.lmms_model import LlavaMoreLMM

    model = LlavaMoreLMM(pretrained=str(bundle), batch_size=3, max_new_tokens=3)
    task = lmms_tasks["demo_gqa"]
    model.task_dict["demo_gqa"] = task.dataset
    split = task.config.test_split
    doc = task.dataset[split][0]
    context = task.doc_to_text(doc)

    def request(continuation: str, doc_id: int = 0) -> Instance:
        return Instance("loglikelihood", (context, continuation, task.doc_to_visual, doc_id, "demo_gqa", split), 0,
                        {"task": "demo_gqa", "doc_id": doc_id, "repeats": 1})  # fmt: skip

    continuations = [" red", " blue square", "x", " yes"]
    batched = model.loglikelihood([request(c) for c in continuations])
    single = [model.loglikelihood([request(c)])[0] for c in continuations]
    for (lp_b, greedy_b), (lp_s, greedy_s) in zip(batched, single, strict=True):
        assert lp_b == pytest.approx(lp_s, abs=1e-4) and greedy_b == greedy_s

    # Recompute the first one by hand from the model's logits.
    prompt_ids, _ = model._prepare_text(context, 1)
    images = task.doc_to_visual(doc)
    cont_ids = model.tokenizer(" red", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = model.model(
            input_ids=torch.tensor([prompt_ids + cont_ids]), pixel_values=model._pixel_values(images)
        ).logits[0]
    log_probs = torch.log_softmax(logits.float(), -1)
    expected = sum(log_probs[len(prompt_ids) - 1 + i, t].item() for i, t in enumerate(cont_ids))
    assert batched[0][0] == pytest.approx(expected, abs=1e-4)
    assert batched[0][0] < 0

    # The greedy flag: the argmax continuation is greedy, the same with its last token changed is not.
    greedy_ids = list(prompt_ids)
    for _ in range(3):
        with torch.inference_mode():
            step = model.model(
                input_ids=torch.tensor([greedy_ids]), pixel_values=model._pixel_values(images)
            ).logits
        greedy_ids.append(int(step[0, -1].argmax()))
    continuation = greedy_ids[len(prompt_ids) :]
    altered = continuation[:-1] + [(continuation[-1] + 1) % len(model.tokenizer)]
    flags = [
        g
        for _, g in model._loglikelihood_batch(
            [(prompt_ids, continuation, images), (prompt_ids, altered, images)]
        )
    ]
    assert flags == [True, False]


def test_unknown_model_args_are_a_user_error(bundle):
    from llava_more.eval.lmms_model import LlavaMoreLMM

    with pytest.raises(UserError, match="unknown argument"):
        LlavaMoreLMM(pretrained=str(bundle), temprature=0)
    with pytest.raises(UserError, match="batch_size"):
        LlavaMoreLMM(pretrained=str(bundle), batch_size="auto")


@pytest.fixture(scope="module")
def evaluated(bundle, benchmarks, tmp_path_factory, monkeypatch_module):
    out = tmp_path_factory.mktemp("eval")
    metrics = run_lmms_eval(
        bundle, ["demo_gqa", "demo_pope"], benchmarks, out, batch_size=3, limit=6, max_new_tokens=6
    )
    return out, metrics


@pytest.fixture(scope="module")
def monkeypatch_module(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf_datasets")))
    yield mp
    mp.undo()


@pytest.mark.slow
def test_end_to_end_lmms_eval_run_writes_scores(evaluated):
    out, metrics = evaluated
    scores = json.loads((out / SCORES_FILE).read_text())
    assert set(scores["columns"]) == {"GQA", "POPE"}
    assert all(0 <= v <= 100 for v in scores["columns"].values())
    assert "exact_match,none" in metrics["demo_gqa"]
    assert {"pope_f1_score,none", "pope_accuracy,none"} <= set(metrics["demo_pope"])
    assert scores["n_samples"]["demo_gqa"] == {"original": 10, "effective": 6}
    # Per-question scores for the report's intervals, each reproducing lmms-eval's own number.
    assert set(scores["samples"]) == {"GQA", "POPE"} and scores["samples_skipped"] == {}
    assert len(scores["samples"]["POPE"]["ids"]) == 6 and scores["samples"]["POPE"]["kind"] == "f1"
    samples = list((out / RAW_DIR).rglob("*_samples_demo_pope.jsonl"))
    assert len(samples) == 1 and len(samples[0].read_text().splitlines()) == 6
    assert (out / LOG_FILE).is_file()
    # The lmms-eval process's checked scores became scores.json; its results file is named from `out`.
    assert (out / scores["results_file"]).is_file() and not (out / CHILD_SCORES_FILE).exists()


@pytest.mark.slow
def test_checker_catches_a_lost_sample_and_a_missing_task(evaluated, tmp_path):
    out, _ = evaluated
    raw = tmp_path / "raw"
    shutil.copytree(out / RAW_DIR, raw)
    results_file = next(raw.rglob("*_results.json"))
    benches = [get_benchmark("demo_gqa"), get_benchmark("demo_pope")]
    assert scores_from_results(benches, results_file, raw, 6)["columns"].keys() == {"GQA", "POPE"}

    samples = next(raw.rglob("*_samples_demo_pope.jsonl"))
    samples.write_text("\n".join(samples.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(EvaluationFailed, match="demo_pope.*5 samples logged"):
        scores_from_results(benches, results_file, raw, 6)

    results = json.loads(results_file.read_text())
    del results["results"]["demo_gqa"]
    results_file.write_text(json.dumps(results))
    with pytest.raises(EvaluationFailed, match="demo_gqa: lmms-eval wrote no result"):
        scores_from_results(benches[:1], results_file, raw, 6)


def test_missing_data_file_fails_naming_the_task(bundle, benchmarks, tmp_path):
    broken = tmp_path / "bench"
    shutil.copytree(benchmarks / "demo_gqa", broken / "demo_gqa")
    (broken / "demo_gqa" / "data" / "testdev.parquet").unlink()
    with pytest.raises(EvaluationFailed, match="demo_gqa: data file .*testdev.parquet.* is missing"):
        run_lmms_eval(bundle, ["demo_gqa"], broken, tmp_path / "out", batch_size=1, limit=2)


@pytest.mark.slow
def test_a_failure_inside_lmms_eval_is_caught_although_it_exits_0(
    bundle, benchmarks, tmp_path, monkeypatch_module
):
    broken = tmp_path / "model"
    shutil.copytree(bundle, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(
        EvaluationFailed, match=r"demo_gqa, demo_pope: lmms-eval produced no results \(exit 0\): .*Error"
    ):
        run_lmms_eval(broken, ["demo_gqa", "demo_pope"], benchmarks, tmp_path / "out", batch_size=1, limit=2)
    assert not (tmp_path / "out" / SCORES_FILE).exists()


@pytest.mark.slow
def test_a_failure_after_scoring_fails_the_run_and_writes_no_scores(
    bundle, benchmarks, tmp_path, monkeypatch
):
    # the lmms-eval process scores the task, then dies while extracting the per-question scores
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import llava_more.report.samples as samples\n"
        "def broken(*args, **kwargs):\n"
        "    raise OSError('disk full while reading the sample logs')\n"
        "samples.extract_columns = broken\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "out"
    with pytest.raises(EvaluationFailed, match=r"demo_gqa: lmms-eval wrote results for every task, then its process "
                                               r"failed \(exit 1\) .*OSError: disk full"):  # fmt: skip
        run_lmms_eval(bundle, ["demo_gqa"], benchmarks, out, batch_size=1, limit=2)
    assert list((out / "lmms_eval").rglob("*_results.json"))  # lmms-eval had finished
    assert not (out / SCORES_FILE).exists()


def test_a_folder_that_is_not_a_bundle_fails_before_running(tmp_path, benchmarks):
    with pytest.raises(EvaluationFailed, match="demo_gqa, demo_pope: not evaluated"):
        run_lmms_eval(
            tmp_path / "nowhere", ["demo_gqa", "demo_pope"], benchmarks, tmp_path / "out", batch_size=1
        )
