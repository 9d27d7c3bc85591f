"""Our bundles speak the ecosystem's message format: on a plain-``llava`` demo bundle, lmms-eval's own
``llava_hf`` model (its default chat variant, which sends ``[{"type": "image"}, {"type": "text", ...}]``
content through ``processor.apply_chat_template``; only the device given: ``device=cpu,device_map=cpu``)
and our plugin give the same answers on the same local tasks.

The bundle is briefly instruction-tuned so that it answers in a few words and ends its turn, as a
trained model does (a random one would run to the token limit, where the two harnesses' handling of
the tasks' stop strings differs: ``llava_hf`` ignores them).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llava_more.data.demo_instruct import generate_demo_instruct
from llava_more.eval.demo_tasks import generate_demo_benchmarks
from llava_more.eval.run import RAW_DIR, run_lmms_eval
from llava_more.model.initialize import init_model
from llava_more.text.corpus import read_corpus
from llava_more.text.tokenizer import train_demo_tokenizer
from llava_more.train import TrainConfig
from llava_more.train.trainer import train_stage

TASKS = ["demo_gqa", "demo_pope"]
LIMIT = 12
# DeepSeek-R1-Distill x CLIP: a plain llava pair whose template ends a turn with the tokenizer's EOS
# and has no stop strings, so both harnesses stop generating at the same token.
LLM, VISION = "deepseek-r1-distill-llama-8b", "clip-l-336"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("llava_hf")
    data = root / "instruct"
    generate_demo_instruct(data, 240, seed=3)
    train_demo_tokenizer(read_corpus([data / "data.json"]), root / "tok", vocab_size=600)
    init_model(
        LLM, VISION, size="tiny", tokenizer_dir=root / "tok", out_dir=root / "init", system_prompt=False
    )
    config = TrainConfig(
        epochs=4, global_batch=16, per_device_batch=16, lr=3e-3, warmup_ratio=0.0, max_length=256,
        image_aspect_ratio="pad", save_every_steps=1000, seed=0,
    )  # fmt: skip
    train_stage(2, root / "init", data / "data.json", data / "images", root / "model", root / "work", config)
    return root / "model"


def _responses(output: Path) -> dict[tuple[str, int], str]:
    answers = {}
    for task in TASKS:
        files = list(output.rglob(f"*_samples_{task}.jsonl"))
        assert len(files) == 1, f"{task}: {files}"
        for line in files[0].read_text().splitlines():
            sample = json.loads(line)
            response = sample["filtered_resps"]
            answers[task, sample["doc_id"]] = (
                response[0] if isinstance(response, list) else response
            ).strip()
    return answers


def test_llava_hf_resolves_to_its_chat_variant_by_default():
    from lmms_eval.models import get_model

    model_class = get_model("llava_hf")
    assert model_class.__module__ == "lmms_eval.models.chat.llava_hf" and not model_class.is_simple


@pytest.mark.slow
def test_llava_hf_chat_and_our_plugin_give_the_same_answers(trained, tmp_path):
    config = json.loads((trained / "config.json").read_text())
    assert config["model_type"] == "llava"  # a plain checkpoint: what llava_hf loads
    bench = tmp_path / "bench"
    generate_demo_benchmarks(bench, LIMIT, seed=9, tasks=TASKS)

    ours = tmp_path / "ours"
    run_lmms_eval(trained, TASKS, bench, ours, batch_size=1, limit=LIMIT)
    theirs = tmp_path / "theirs"
    proc = subprocess.run(
        [
            sys.executable, "-m", "lmms_eval", "--model", "llava_hf",
            "--model_args", f"pretrained={trained},device=cpu,device_map=cpu",
            "--tasks", ",".join(TASKS), "--include_path", str(bench), "--batch_size", "1",
            "--limit", str(LIMIT), "--log_samples", "--output_path", str(theirs),
        ],
        capture_output=True, text=True, timeout=1200, cwd=tmp_path,
    )  # fmt: skip
    log = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0 and "Error during evaluation" not in proc.stdout + proc.stderr, log

    our_answers, their_answers = _responses(ours / RAW_DIR), _responses(theirs)
    assert len(our_answers) == len(TASKS) * LIMIT
    assert their_answers == our_answers
    # The model answers (not the empty string everywhere): the comparison says something.
    assert sum(bool(a) for a in our_answers.values()) >= len(our_answers) // 2
