"""Write the demo benchmarks as local lmms-eval tasks (``--include_path``).

For each task: ``<out>/<task>/data/<split>.parquet`` (Hugging Face ``datasets`` parquet with the
images embedded, so lmms-eval's ``doc["image"]`` is a PIL image as with the real datasets),
``<out>/<task>/images/`` (the same images as PNG, to look at) and ``<out>/<task>/<task>.yaml``.
The YAMLs point at lmms-eval's own task code by absolute module path
(``!function lmms_eval.tasks.pope.utils.pope_process_results``); lmms-eval resolves a dotted path
that is not a file beside the YAML with ``importlib``. ``data_files`` are relative to the YAML,
which lmms-eval 0.7.3 resolves against the YAML's folder, so the folder can move.

Prompts, generation settings and metrics copy the real tasks' YAMLs (lmms-eval 0.7.3), except
MMBench, which is scored offline by ``llava_more.eval.mmbench_rules`` (see ``benchmarks``).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

from llava_more.errors import UserError
from llava_more.eval.benchmarks import dump_task_yaml, function
from llava_more.eval.demo_docs import BUILDERS, POPE_CATEGORIES
from llava_more.outputs import atomic_dir

DEMO_TASKS: tuple[str, ...] = tuple(BUILDERS)
MANIFEST = "manifest.json"

_SHORT = "\nAnswer the question using a single word or phrase."
_LETTER = "\nAnswer with the option's letter from the given choices directly."
_GREEDY = {"temperature": 0, "top_p": 1.0, "num_beams": 1, "do_sample": False}


def _utils(task: str, name: str):
    return function(f"lmms_eval.tasks.{task}.utils.{name}")


def _exact_match() -> dict:
    return {"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
            "ignore_case": True, "ignore_punctuation": True}  # fmt: skip


def _pope_config(task: str, split: str) -> dict:
    metrics = ("accuracy", "precision", "recall", "f1_score", "yes_ratio")
    return {
        "task": task,
        "test_split": split,
        "output_type": "generate_until",
        "doc_to_visual": _utils("pope", "pope_doc_to_visual"),
        "doc_to_text": _utils("pope", "pope_doc_to_text"),
        "doc_to_target": "answer",
        "generation_kwargs": {"max_new_tokens": 128, **_GREEDY},
        "process_results": _utils("pope", "pope_process_results"),
        "metric_list": [
            {
                "metric": f"pope_{m}",
                "aggregation": _utils("pope", f"pope_aggregate_{m}"),
                "higher_is_better": True,
            }
            for m in metrics
        ],
        "lmms_eval_specific_kwargs": {"default": {"pre_prompt": "", "post_prompt": _SHORT}},
    }


def _mmbench_config(task: str, language: str) -> dict:
    module = "lmms_eval.tasks.mmbench." + ("en_utils" if language == "en" else "cn_utils")
    post_prompt = _LETTER if language == "en" else "\n请直接使用所提供的选项字母作为答案回答。"
    max_new_tokens = 1024 if language == "en" else 256
    generation = {"max_new_tokens": max_new_tokens, **_GREEDY}
    if language == "en":
        generation = {"until": ["ASSISTANT:"], **generation}
    rules = "llava_more.eval.mmbench_rules"
    return {
        "task": task,
        "test_split": "dev",
        "output_type": "generate_until",
        "doc_to_visual": function(f"{module}.mmbench_doc_to_visual"),
        "doc_to_text": function(f"{module}.mmbench_doc_to_text"),
        "doc_to_target": "answer",
        "generation_kwargs": generation,
        "process_results": function(f"{rules}.process_results_{language}"),
        "metric_list": [
            {
                "metric": "gpt_eval_score",
                "aggregation": function(f"{rules}.aggregate_{language}"),
                "higher_is_better": True,
            },
            {"metric": "rule_unmatched", "aggregation": "mean", "higher_is_better": False},
        ],
        "lmms_eval_specific_kwargs": {"default": {"pre_prompt": "", "post_prompt": post_prompt}},
    }


def task_configs(task: str) -> dict[str, dict]:
    """``{yaml file stem: config}`` for one demo task (POPE also has its per-split tasks and group)."""
    if task == "demo_gqa":
        config = {
            "task": task, "test_split": "testdev", "output_type": "generate_until",
            "doc_to_visual": _utils("gqa", "gqa_doc_to_visual"), "doc_to_text": _utils("gqa", "gqa_doc_to_text"),
            "doc_to_target": "answer", "generation_kwargs": {"max_new_tokens": 16, **_GREEDY},
            "metric_list": [_exact_match()],
            "lmms_eval_specific_kwargs": {"default": {"pre_prompt": "", "post_prompt": _SHORT}},
        }  # fmt: skip
    elif task == "demo_pope":
        configs = {task: _pope_config(task, "test")}
        for category in POPE_CATEGORIES:
            name = f"{task}_{category[:3] if category != 'random' else 'random'}"
            configs[name] = _pope_config(name, category)
        configs[f"{task}_full"] = {"group": f"{task}_full", "task": [n for n in configs if n != task]}
        return configs
    elif task == "demo_scienceqa_img":
        config = {
            "task": task, "test_split": "test", "output_type": "generate_until",
            "doc_to_visual": _utils("scienceqa", "sqa_doc_to_visual"),
            "doc_to_text": _utils("scienceqa", "sqa_doc_to_text"),
            "doc_to_target": _utils("scienceqa", "sqa_doc_to_target"),
            "generation_kwargs": {"max_new_tokens": 16, "temperature": 0, "do_sample": False},
            "process_results": _utils("scienceqa", "sqa_process_results"),
            "metric_list": [_exact_match()],
            "lmms_eval_specific_kwargs": {"default": {"format": "default", "pre_prompt": "", "post_prompt": _LETTER}},
        }  # fmt: skip
    elif task == "demo_textvqa":
        config = {
            "task": task, "test_split": "validation", "output_type": "generate_until",
            "doc_to_visual": _utils("textvqa", "textvqa_doc_to_visual"),
            "doc_to_text": _utils("textvqa", "textvqa_doc_to_text"),
            "doc_to_target": "answer", "generation_kwargs": {"until": ["ASSISTANT:"]},
            "process_results": _utils("textvqa", "textvqa_process_results"),
            "metric_list": [_exact_match()],
            # The paper's setting: the OCR tokens are listed in the prompt.
            "lmms_eval_specific_kwargs": {"default": {"pre_prompt": "", "post_prompt": _SHORT, "ocr": True}},
        }  # fmt: skip
    elif task == "demo_ai2d":
        config = {
            "task": task, "test_split": "test", "output_type": "generate_until",
            "doc_to_visual": _utils("ai2d", "ai2d_doc_to_visual"), "doc_to_text": _utils("ai2d", "ai2d_doc_to_text"),
            "doc_to_target": _utils("ai2d", "ai2d_doc_to_target"),
            "lmms_eval_specific_kwargs": {"default": {"prompt_format": "mcq", "pre_prompt": "", "post_prompt": _LETTER}},
            "model_specific_target_kwargs": {"default": "mcq"},
            "generation_kwargs": {"max_new_tokens": 16, "temperature": 0, "do_sample": False},
            "filter_list": [{"name": "flexible-extract", "filter": [{
                "function": _utils("ai2d", "MultiChoiceRegexFilter"), "group_select": 0, "ignore_case": True,
                "ignore_punctuation": True, "regex_pattern": "([A-Z])\\."}]}],
            "metric_list": [_exact_match()],
        }  # fmt: skip
    elif task == "demo_mme":
        config = {
            "task": task, "test_split": "test", "output_type": "generate_until",
            "doc_to_visual": _utils("mme", "mme_doc_to_visual"), "doc_to_text": _utils("mme", "mme_doc_to_text"),
            "doc_to_target": "answer", "generation_kwargs": {"max_new_tokens": 16, **_GREEDY},
            "process_results": _utils("mme", "mme_process_results"),
            "metric_list": [
                {"metric": m, "aggregation": _utils("mme", "mme_aggregate_results"), "higher_is_better": True}
                for m in ("mme_perception_score", "mme_cognition_score")
            ],
            "lmms_eval_specific_kwargs": {"default": {"pre_prompt": "", "post_prompt": _SHORT}},
        }  # fmt: skip
    elif task in ("demo_mmbench_en", "demo_mmbench_cn"):
        config = _mmbench_config(task, task.rsplit("_", 1)[1])
    elif task == "demo_seedbench":
        config = {
            "task": task, "test_split": "test", "output_type": "generate_until",
            "doc_to_visual": _utils("seedbench", "seed_doc_to_visual"),
            "doc_to_text": _utils("seedbench", "seed_doc_to_text"),
            "doc_to_target": "answer", "generation_kwargs": {"until": ["ASSISTANT:"]},
            "process_results": _utils("seedbench", "seed_process_result"),
            "metric_list": [
                {"metric": m, "aggregation": _utils("seedbench", "seed_aggregation_result"), "higher_is_better": True}
                for m in ("seed_image", "seed_video", "seed_all")
            ],
        }  # fmt: skip
    elif task == "demo_mmmu":
        config = {
            "task": task, "test_split": "validation", "output_type": "generate_until",
            "doc_to_visual": _utils("mmmu", "mmmu_doc_to_visual"), "doc_to_text": _utils("mmmu", "mmmu_doc_to_text"),
            "doc_to_target": "answer", "generation_kwargs": {"max_new_tokens": 128},
            "process_results": _utils("mmmu", "mmmu_process_results"),
            "metric_list": [{"metric": "mmmu_acc", "aggregation": _utils("mmmu", "mmmu_aggregate_results"),
                             "higher_is_better": True}],
            "lmms_eval_specific_kwargs": {"default": {
                "prompt_type": "format",
                "multiple_choice_prompt": "Answer with the option's letter from the given choices directly.",
                "open_ended_prompt": "Answer the question using a single word or phrase."}},
        }  # fmt: skip
    else:
        raise UserError(f"unknown demo task {task!r}; demo tasks: {', '.join(DEMO_TASKS)}")
    return {task: config}


def _write_split(docs: list[dict], parquet: Path, images_dir: Path, split: str) -> None:
    """Save images as PNG and the docs (images embedded as PNG bytes) as a ``datasets`` parquet."""
    import datasets
    from PIL import Image

    def encode(image: Image.Image, name: str) -> dict:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        path = images_dir / name
        if not path.exists():
            path.write_bytes(data)
        return {"bytes": data, "path": None}

    rows, image_columns = [], {}
    for index, doc in enumerate(docs):
        row = {}
        for key, value in doc.items():
            if isinstance(value, Image.Image):
                row[key] = encode(value, f"{split}-{index:06d}-{key}.png")
                image_columns[key] = datasets.Image()
            elif isinstance(value, list) and value and isinstance(value[0], Image.Image):
                row[key] = [encode(v, f"{split}-{index:06d}-{key}-{k}.png") for k, v in enumerate(value)]
                image_columns[key] = datasets.List(datasets.Image())
            else:
                row[key] = value
        rows.append(row)
    # Columns that are None everywhere (MMMU's unused image_2..image_7) are images too.
    for key in docs[0]:
        if key.startswith("image_") and all(doc[key] is None for doc in docs):
            image_columns[key] = datasets.Image()
    dataset = datasets.Dataset.from_list(rows)
    for key, feature in image_columns.items():
        dataset = dataset.cast_column(key, feature)
    parquet.parent.mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(str(parquet))


def _write_task(task: str, task_dir: Path, n: int, seed: int) -> dict:
    if task_dir.exists():
        shutil.rmtree(task_dir)
    images_dir = task_dir / "images"
    images_dir.mkdir(parents=True)
    splits = BUILDERS[task](n, seed)
    counts = {}
    for split, docs in splits.items():
        _write_split(docs, task_dir / "data" / f"{split}.parquet", images_dir, split)
        counts[split] = len(docs)
    for stem, config in task_configs(task).items():
        if "group" not in config:
            split = config["test_split"]
            config = {"dataset_path": "parquet", "dataset_kwargs": {"data_files": {split: f"data/{split}.parquet"}},
                      **config, "metadata": {"version": 0.0}}  # fmt: skip
        (task_dir / f"{stem}.yaml").write_text(dump_task_yaml(config), encoding="utf-8")
    digest = hashlib.sha256()
    for path in sorted(p for p in task_dir.rglob("*") if p.is_file()):
        digest.update(path.relative_to(task_dir).as_posix().encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return {"splits": counts, "sha256": digest.hexdigest()}


def generate_demo_benchmarks(
    out_dir: str | Path, n_per_task: int, seed: int, tasks: list[str] | None = None
) -> dict[str, Path]:
    """Write the demo lmms-eval tasks under ``out_dir`` (the ``--include_path``); returns task -> folder.

    ``n_per_task`` documents per task (POPE and MME: questions, two per image). The same seed gives
    the same documents and images.
    """
    if n_per_task < 2:
        raise UserError(f"make-benchmarks --n {n_per_task}: need at least 2 documents per task")
    tasks = list(tasks or DEMO_TASKS)
    unknown = [t for t in tasks if t not in BUILDERS]
    if unknown:
        raise UserError(f"unknown demo task(s) {', '.join(unknown)}; demo tasks: {', '.join(DEMO_TASKS)}")
    import datasets

    datasets.disable_progress_bars()  # one bar per split and column is noise in a pipeline log
    out = Path(out_dir)
    # Built in a staging folder that replaces ``out`` once complete (the task folders can move).
    with atomic_dir(out, signature=MANIFEST) as staging:
        entries = {task: _write_task(task, staging / task, n_per_task, seed) for task in tasks}
        manifest = {
            "generator": "llava_more.eval.demo_tasks",
            "seed": seed,
            "n_per_task": n_per_task,
            "tasks": entries,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return {task: out / task for task in tasks}
