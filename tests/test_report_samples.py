"""Per-question scores against lmms-eval's own aggregations: on the benchmark as run and on
bootstrap resamples, every column's statistic equals what the task's aggregation function returns.

The sample records are made the way lmms-eval makes them: each task's own ``process_results`` on
documents in the real datasets' formats, with random answers, written as its ``*_samples_<task>.jsonl``.
"""

from __future__ import annotations

import ast
import json
import random
from pathlib import Path

import numpy as np
import pytest

from llava_more.eval.benchmarks import get_benchmark
from llava_more.report.samples import ColumnSamples, count_options, extract_columns, read_sample_logs

rng_py = random.Random(3)


def _write_logs(raw_dir: Path, task: str, records: list[dict]) -> None:
    folder = raw_dir / "runs__model"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"doc_id": i, **r}, ensure_ascii=False) for i, r in enumerate(records)]
    (folder / f"20260101_000000_samples_{task}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _options_prompt(question: str, options: list[str]) -> str:
    letters = "ABCDE"
    return (
        question
        + "\n"
        + "\n".join(f"{letters[i]}. {o}" for i, o in enumerate(options))
        + "\nAnswer with the letter."
    )


# ---- lmms-eval's process_results on documents in each task's format


def _pope_records(n: int) -> list[dict]:
    from lmms_eval.tasks.pope.utils import pope_process_results

    out = []
    for i in range(n):
        doc = {"question_id": str(i), "answer": rng_py.choice(["yes", "no"]), "question": "Is there a cat?"}
        pred = rng_py.choices(["yes", "no", "maybe"], weights=[5, 4, 1])[0]
        out.append({"input": doc["question"], **pope_process_results(doc, [pred])})
    return out


def _mme_records(images_per_category: int) -> list[dict]:
    from lmms_eval.tasks.mme.utils import mme_process_results

    out = []
    for category in ("existence", "count", "color", "OCR", "commonsense_reasoning", "code_reasoning"):
        for i in range(images_per_category):
            for answer in ("Yes", "No"):
                doc = {"question_id": f"{category}/{i:04d}.png", "category": category, "answer": answer,
                       "question": "Is it? Please answer yes or no."}  # fmt: skip
                pred = rng_py.choices(["Yes", "No", "I think so"], weights=[5, 4, 1])[0]
                out.append({"input": doc["question"], **mme_process_results(doc, [pred])})
    return out


def _seed_records(n: int) -> list[dict]:
    from lmms_eval.tasks.seedbench.utils import seed_process_result

    out = []
    for i in range(n):
        doc = {
            "answer": rng_py.choice("ABCD"),
            "data_type": "video" if i % 3 == 0 else "image",
            "question_id": f"{i:06d}",
        }
        pred = rng_py.choice(["A", "B", "C", "D", "B.", "none"])
        out.append(
            {"input": _options_prompt("Which?", ["w", "x", "y", "z"]), **seed_process_result(doc, [pred])}
        )
    return out


def _mmmu_records(n: int) -> list[dict]:
    from lmms_eval.tasks.mmmu.utils import mmmu_process_results

    out = []
    for i in range(n):
        subject = rng_py.choice(["Art", "Math", "Physics"])
        if i % 5 == 0:
            doc = {"id": f"validation_{subject}_{i}", "question_type": "open", "options": "[]",
                   "answer": str(rng_py.randint(1, 4)), "question": "How many?"}  # fmt: skip
            pred = str(rng_py.randint(1, 4))
            prompt = doc["question"]
        else:
            options = ["red", "green", "blue", "black"]
            doc = {"id": f"validation_{subject}_{i}", "question_type": "multiple-choice", "options": str(options),
                   "answer": rng_py.choice("ABCD"), "question": "Which colour?"}  # fmt: skip
            pred = rng_py.choice(["A", "B", "C", "D", "The answer is (C)", "green"])
            prompt = _options_prompt(doc["question"], ast.literal_eval(doc["options"]))
        out.append({"input": prompt, **mmmu_process_results(doc, [pred])})
    return out


def _mmbench_records(questions: int) -> list[dict]:
    """MMBench dev: each question with circular variants (index + k * 1e6, options rotated)."""
    from llava_more.eval.mmbench_rules import process_results_en

    out = []
    for q in range(questions):
        options = ["one", "two", "three", "four"][: rng_py.choice([2, 3, 4])]
        answer = rng_py.randrange(len(options))
        for k in range(len(options) if q % 4 else 1):  # some questions have no circular variants
            rotated = options[k:] + options[:k]
            letters = "ABCD"
            doc = {"index": q + k * 1_000_000, "question": "How many?", "answer": letters[(answer - k) % len(options)],
                   "hint": None, "source": "demo", "split": "dev", "category": "count", "L2-category": "perception",
                   **{letters[j]: rotated[j] if j < len(rotated) else "nan" for j in range(4)}}  # fmt: skip
            pred = rng_py.choice([doc["answer"], "A", "B", "I do not know"])
            out.append(
                {"input": _options_prompt(doc["question"], rotated), **process_results_en(doc, [pred])}
            )
    return out


def _exact_match_records(n: int) -> list[dict]:
    return [{"input": "What colour?", "exact_match": rng_py.choice([0.0, 1.0, 0.3, 0.6])} for _ in range(n)]


# ---- resamples fed to the task's own aggregation


def _redraw(samples: ColumnSamples, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """One bootstrap draw: counts per unit and the drawn units in order (within each stratum)."""
    picks = []
    for index in samples.stratum_index():
        picks += list(index[rng.integers(0, len(index), len(index))])
    return np.bincount(picks, minlength=samples.n).astype(float), picks


def _check_against(samples: ColumnSamples, aggregate, drawn_records, draws: int = 6) -> None:
    rng = np.random.default_rng(0)
    for _ in range(draws):
        counts, picks = _redraw(samples, rng)
        ours = samples.statistic(counts)[0]
        assert ours == pytest.approx(
            aggregate(drawn_records(picks)), abs=1e-3 * max(1.0, samples.scale / 100)
        )


def _extract(tmp_path, benchmark: str, records: list[dict], column: str, reported: float) -> ColumnSamples:
    bench = get_benchmark(benchmark)
    _write_logs(tmp_path, bench.task, records)
    report = extract_columns([bench], tmp_path, {column: reported})
    assert column in report.columns, report.skipped
    return report.columns[column]


def test_pope_f1_equals_lmms_evals_aggregation_on_resamples(tmp_path):
    from lmms_eval.tasks.pope.utils import pope_aggregate_f1_score

    records = _pope_records(300)
    metric = [r["pope_f1_score"] for r in records]
    samples = _extract(tmp_path, "pope", records, "POPE", pope_aggregate_f1_score(metric) * 100)
    assert samples.kind == "f1" and samples.n == 300
    _check_against(
        samples, lambda rs: pope_aggregate_f1_score(rs) * 100, lambda picks: [metric[i] for i in picks]
    )
    assert samples.chance == pytest.approx(50.0, abs=6)  # a fair coin on about balanced yes/no questions


def test_mme_images_are_the_units_and_categories_the_strata(tmp_path):
    from lmms_eval.tasks.mme.utils import eval_type_dict, mme_aggregate_results

    records = _mme_records(15)
    for column, key in (("MME-P", "mme_perception_score"), ("MME-C", "mme_cognition_score")):
        metric = [r[key] for r in records if key in r]
        samples = _extract(tmp_path / column, "mme", records, column, mme_aggregate_results(metric))
        assert samples.scale == 1.0 and samples.n == len(metric) // 2  # one unit per image (two questions)
        by_unit = {}
        for m in metric:
            by_unit.setdefault(f"{m['category']}/{m['question_id']}", []).append(m)

        def drawn(picks, by_unit=by_unit, samples=samples):
            # Each drawn image becomes a distinct image, as it would be in a benchmark built from the draw.
            return [{**m, "question_id": f"{m['question_id']}#{p}"} for p, i in enumerate(picks)
                    for m in by_unit[samples.ids[i]]]  # fmt: skip

        _check_against(samples, mme_aggregate_results, drawn)
        kind = "Perception" if column == "MME-P" else "Cognition"
        categories = {m["category"] for m in metric}
        assert categories <= set(eval_type_dict[kind]) and samples.chance == 75.0 * len(categories)


def test_seed_splits_are_strata_of_seed_all(tmp_path):
    from lmms_eval.tasks.seedbench.utils import seed_aggregation_result

    records = _seed_records(240)
    for column, key in (("SEED-All", "seed_all"), ("SEED-I", "seed_image"), ("SEED-V", "seed_video")):
        metric = [r[key] for r in records if key in r]
        samples = _extract(
            tmp_path / column, "seedbench", records, column, seed_aggregation_result(metric) * 100
        )
        chosen = [r for r in records if key in r]
        _check_against(samples, lambda rs: seed_aggregation_result(rs) * 100,
                       lambda picks, chosen=chosen, key=key: [chosen[i][key] for i in picks])  # fmt: skip
        assert samples.chance == pytest.approx(25.0)
    assert set(_extract(tmp_path / "again", "seedbench", records, "SEED-All",
                        seed_aggregation_result([r["seed_all"] for r in records]) * 100).strata) == {"image", "video"}  # fmt: skip


def test_mmmu_correctness_follows_its_answer_parser(tmp_path):
    from lmms_eval.tasks.mmmu.utils import mmmu_aggregate_results

    records = _mmmu_records(200)
    metric = [r["mmmu_acc"] for r in records]
    samples = _extract(tmp_path, "mmmu_val", records, "MMMU", mmmu_aggregate_results(metric) * 100)
    _check_against(
        samples, lambda rs: mmmu_aggregate_results(rs) * 100, lambda picks: [metric[i] for i in picks]
    )
    assert samples.chance == pytest.approx(100 * (0.8 * 0.25), abs=4)  # open questions: 0


def test_mmbench_counts_a_question_only_when_all_its_circular_variants_are_right(tmp_path):
    from llava_more.eval.mmbench_rules import aggregate_en

    records = _mmbench_records(80)
    metric = [r["gpt_eval_score"] for r in records]
    samples = _extract(tmp_path, "mmbench_en_dev", records, "MMB-EN", aggregate_en(metric))
    assert samples.n == 80  # main questions, not rows
    by_main: dict[int, list[dict]] = {}
    for m in metric:
        by_main.setdefault(m["index"] % 1_000_000, []).append(m)

    def drawn(picks):
        return [{**m, "index": p + (m["index"] // 1_000_000) * 1_000_000} for p, i in enumerate(picks)
                for m in by_main[int(samples.ids[i])]]  # fmt: skip

    _check_against(samples, aggregate_en, drawn, draws=3)
    assert 0 < samples.chance < 50


def test_exact_match_columns_are_means(tmp_path):
    records = _exact_match_records(50)
    expected = float(np.mean([r["exact_match"] for r in records])) * 100
    samples = _extract(tmp_path, "textvqa_val", records, "TextVQA", expected)
    assert samples.kind == "mean" and samples.point() == pytest.approx(expected) and samples.chance == 0.0


def test_a_column_whose_samples_do_not_reproduce_the_reported_value_is_left_out(tmp_path, caplog):
    records = _pope_records(40)
    bench = get_benchmark("pope")
    _write_logs(tmp_path, bench.task, records)
    report = extract_columns([bench], tmp_path, {"POPE": 12.345})
    assert report.columns == {} and "does not reproduce lmms-eval's 12.345" in report.skipped["POPE"]
    assert "POPE: no confidence interval" in caplog.text
    assert (
        "no logged samples" in extract_columns([get_benchmark("gqa")], tmp_path, {"GQA": 1.0}).skipped["GQA"]
    )


def test_samples_survive_the_scores_json_round_trip(tmp_path):
    from lmms_eval.tasks.mme.utils import mme_aggregate_results

    records = _mme_records(4)
    metric = [r["mme_perception_score"] for r in records if "mme_perception_score" in r]
    samples = _extract(tmp_path, "mme", records, "MME-P", mme_aggregate_results(metric))
    again = ColumnSamples.from_json(json.loads(json.dumps(samples.to_json())))
    assert again.ids == samples.ids and again.strata == samples.strata and again.point() == samples.point()
    assert len(read_sample_logs(tmp_path, "mme")) == len(records)


@pytest.mark.parametrize(
    ("prompt", "options"),
    [
        ("Which?\nA. red\nB. blue\nC. green", 3),
        ("How many?", 0),
        ("Pick\n(A) x\n(B) y", 2),
        ("A. x\nC. y", 1),
    ],
)
def test_options_are_counted_from_the_prompt(prompt, options):
    assert count_options(prompt) == options
