"""``llava-more models`` and ``llava-more init-model`` through the real console-script entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from llava_more.cli import main
from llava_more.config import load_params
from llava_more.model.bundle import load_bundle

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A word-level tokenizer that knows none of the chat templates' markers (init-model adds them)."""
    words = ["<unk>"] + [f"w{i}" for i in range(30)]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    out = tmp_path_factory.mktemp("tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>").save_pretrained(out)
    return out


def test_models_lists_the_study_pairs_with_real_shapes(capsys):
    params = REPO / "params.yaml"
    study = load_params(params).study("demo")
    assert main(["models", "--json", "--study", "demo", "--params", str(params)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in records] == list(study.pairs)
    for record in records:
        assert {
            "id",
            "llm",
            "vision",
            "s2",
            "llm_params",
            "vision_params",
            "projector_in",
            "projector_out",
            "image_tokens",
        } <= set(record)
        assert record["llm_params"] > 1e9 and record["vision_params"] > 1e8


def test_init_model_writes_a_loadable_tiny_bundle(tmp_path, tokenizer_dir):
    out = tmp_path / "init"
    code = main(
        [
            "init-model",
            "--llm",
            "gemma2-2b",
            "--vision",
            "siglip2-so400m-384",
            "--s2",
            "--size",
            "tiny",
            "--tokenizer",
            str(tokenizer_dir),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    bundle = load_bundle(out)
    assert bundle.meta.template == "gemma2" and bundle.meta.s2_scales == [48, 96, 144]
    assert bundle.meta.image_tokens == 36
    tokenizer = bundle.tokenizer
    assert tokenizer.chat_template  # the LLM's chat template was applied
    assert bundle.model.config.text_config.vocab_size == len(tokenizer)
    assert bundle.model.config.image_token_id == tokenizer.convert_tokens_to_ids("<image>")
    assert tokenizer.convert_tokens_to_ids("<end_of_turn>") in bundle.model.generation_config.eos_token_id
    assert bundle.image_processor(images=[_gray()], return_tensors="pt")["pixel_values"].shape[-1] == 144


def test_init_model_without_system_prompt_records_the_variant_template(tmp_path, tokenizer_dir):
    out = tmp_path / "init"
    args = [
        "init-model",
        "--llm",
        "phi4-mini",
        "--vision",
        "clip-l-336",
        "--size",
        "tiny",
        "--no-system-prompt",
    ]
    assert main([*args, "--tokenizer", str(tokenizer_dir), "--out", str(out)]) == 0
    bundle = load_bundle(out)
    # Training, evaluation and chat all resolve the template from this id.
    assert bundle.meta.template == "phi4+no-system"
    messages = [{"role": "user", "content": "w1"}]
    assert bundle.tokenizer.apply_chat_template(messages, tokenize=False) == "<|user|>w1<|end|>"


def test_init_model_assembles_pretrained_checkpoints_given_by_path(tmp_path, tokenizer_dir):
    from transformers import AutoModelForCausalLM

    from llava_more.model import get_llm, get_vision

    AutoModelForCausalLM.from_config(get_llm("llama3.1-8b").config("tiny", vocab_size=40)).save_pretrained(
        tmp_path / "llm"
    )
    clip = get_vision("clip-l-336")
    clip.model_class(clip.config("tiny")).save_pretrained(tmp_path / "vision")
    args = ["init-model", "--llm", "llama3.1-8b", "--vision", "clip-l-336", "--s2", "--size", "tiny"]
    args += ["--pretrained", "--llm-path", str(tmp_path / "llm"), "--vision-path", str(tmp_path / "vision")]
    assert main([*args, "--tokenizer", str(tokenizer_dir), "--out", str(tmp_path / "init")]) == 0
    bundle = load_bundle(tmp_path / "init")
    assert bundle.model.config.model_type == "llava_more" and bundle.model.config.s2_scales == [48, 96, 144]
    assert bundle.model.config.text_config.vocab_size >= len(bundle.tokenizer)
    assert bundle.tokenizer.convert_tokens_to_ids("<|eot_id|>") in bundle.model.generation_config.eos_token_id


def test_init_model_is_deterministic_for_a_seed(tmp_path, tokenizer_dir):
    args = [
        "init-model",
        "--llm",
        "phi-2",
        "--vision",
        "clip-l-336",
        "--size",
        "tiny",
        "--tokenizer",
        str(tokenizer_dir),
        "--seed",
        "3",
        "--out",
    ]
    assert main([*args, str(tmp_path / "a")]) == 0 and main([*args, str(tmp_path / "b")]) == 0
    a, b = load_bundle(tmp_path / "a").model, load_bundle(tmp_path / "b").model
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--llm", "gpt-5", "--vision", "clip-l-336", "--size", "tiny"], "valid ids"),
        (["--llm", "phi-2", "--vision", "clip-l-336", "--size", "tiny", "--s2-scales", "48", "100"], "100"),
        (["--llm", "phi-2", "--vision", "clip-l-336", "--size", "real"], "--pretrained"),
    ],
)
def test_init_model_user_errors_are_one_line(tmp_path, tokenizer_dir, capsys, extra, message):
    code = main(["init-model", *extra, "--tokenizer", str(tokenizer_dir), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and "\n" not in err
    assert not (tmp_path / "x").exists()


def test_init_model_names_a_missing_tokenizer(tmp_path, capsys):
    code = main(
        [
            "init-model",
            "--llm",
            "phi-2",
            "--vision",
            "clip-l-336",
            "--size",
            "tiny",
            "--tokenizer",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2 and "nope" in capsys.readouterr().err


def _gray():
    from PIL import Image

    return Image.new("RGB", (64, 50), (128, 128, 128))


def test_models_defaults_to_the_paper_study(capsys):
    params = Path(__file__).resolve().parents[1] / "params.yaml"
    study = load_params(params).study("paper")
    assert main(["models", "--json", "--params", str(params)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in records] == list(study.pairs)
    assert len(records) == 23
    s2 = {r["id"]: r for r in records if r["s2"]}
    assert s2["phi4-mini_clip-l-336_s2"]["projector_in"] == 3072
    assert s2["gemma2-9b_siglip2-so400m-384_s2"]["projector_in"] == 3456
