"""Backbones declared in params.yaml (``backbones:``): parsed with key-naming errors, built from the
checkpoint's own files (config.json, tokenizer and its chat template, image processor), tiny twins of
the same classes, real-size builds on ``meta``, listed by ``llava-more models``; and the built-in LLMs
re-declared through that generic path give the same templates, masks and model configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from llava_more import cli
from llava_more.errors import ConfigError
from llava_more.model import get_llm, get_vision, list_llms, list_visions
from llava_more.model.builder import build_llava
from llava_more.model.declarations import declare, declared, parse_backbones
from llava_more.model.describe import describe_model
from llava_more.model.initialize import init_model
from llava_more.model.llm import builtin_llms
from llava_more.text import get_template
from llava_more.text.encode import IGNORE_INDEX, encode_conversation
from llava_more.text.tokenizer import apply_template, train_demo_tokenizer
from llava_more.text.tokenizer_template import template_from_tokenizer
from tests.declared_checkpoints import PARAMS, backbones_section, write_checkpoints

ROOT = Path(__file__).resolve().parents[1]
CORPUS = [
    "What color is the big shape? red blue green",
    "How many? two three. Yes no.",
    "A caption of a scene.",
]
CONVERSATION = [
    {"from": "system", "value": "Be brief."},
    {"from": "human", "value": "<image>\nWhat color is it?"},
    {"from": "gpt", "value": "Red."},
    {"from": "human", "value": "How many <|eot_id|> shapes?"},
    {"from": "gpt", "value": "Two <end_of_turn> shapes."},
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return write_checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture()
def declared_set(folders):
    yield declare(backbones_section(folders))
    declare(None)


@pytest.fixture(scope="module")
def demo_tokenizer_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    train_demo_tokenizer(CORPUS * 5, out, vocab_size=400)
    return out


# ---------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    "section,message",
    [
        ({"llm": {"x": {"hf_id": "a/b", "tempalte": "llama3.1"}}}, "backbones.llm.x.tempalte: unknown key"),
        ({"llm": {"x": {"hf_id": "a/b", "path": "."}}}, "backbones.llm.x: give exactly one of hf_id"),
        ({"llm": {"x": {}}}, "backbones.llm.x: give exactly one of hf_id"),
        ({"llm": {"x": {"path": "no/such/folder"}}}, "backbones.llm.x.path: .* is not a folder"),
        ({"llm": {"llama3.1-8b": {"hf_id": "a/b"}}}, "built-in LLM id"),
        (
            {"llm": {"x": {"hf_id": "a/b", "template": "chatml"}}},
            "backbones.llm.x.template: 'chatml' is not a built-in",
        ),
        ({"vision": {"v": {"hf_id": "a/b", "prefix_tokens": -1}}}, "prefix_tokens must be >= 0"),
        (
            {"vision": {"v": {"hf_id": "a/b", "feature_layer": "last"}}},
            "backbones.vision.v.feature_layer: expected int",
        ),
        ({"vision": {"clip-l-336": {"hf_id": "a/b"}}}, "built-in encoder id"),
        ({"encoders": {}}, "backbones.encoders: unknown key"),
    ],
)
def test_bad_declarations_name_the_key(section, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        parse_backbones(section, tmp_path)


def test_params_yaml_declarations_reach_the_registry_and_unknown_ids_list_them(folders, tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["backbones"] = backbones_section(folders)
    raw["studies"]["declared"] = {
        **raw["studies"]["ci"],
        "experiments": [{"llm": "qwen2.5-0.5b", "vision": "vit-b-16"}],
        "tables": {"table1_llm": {"vision": "vit-b-16"}},
    }
    from llava_more.config.schema import parse_params

    try:
        params = parse_params(raw, ROOT)
        assert params.study("declared").experiments[0].pair_id == "qwen2.5-0.5b_vit-b-16"
        assert list_llms()[: len(builtin_llms())] == list(builtin_llms())
        assert list_llms()[-2:] == ["qwen2.5-0.5b", "llama3.2-1b"] and list_visions()[-1] == "vit-b-16"
        raw["studies"]["declared"]["experiments"] = [{"llm": "qwen2.5-7b", "vision": "vit-b-16"}]
        with pytest.raises(
            ConfigError, match="experiments\\[0\\].llm: unknown LLM id 'qwen2.5-7b'.*qwen2.5-0.5b"
        ):
            parse_params(raw, ROOT)
    finally:
        declare(None)


def test_commands_that_never_load_params_read_the_declarations_of_params_yaml(folders, tmp_path, monkeypatch):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"backbones": backbones_section(folders)}))
    monkeypatch.setenv("LLAVA_MORE_PARAMS", str(params))
    import llava_more.model.declarations as declarations

    monkeypatch.setattr(declarations, "_DECLARED", declarations.Declarations())
    assert get_vision("vit-b-16").declared and get_llm("qwen2.5-0.5b").source == str(folders["qwen2.5-0.5b"])
    assert declared().loaded


# ---------------------------------------------------------------------------------------------- the checkpoint's own files
def test_architecture_and_sizes_come_from_the_checkpoint(declared_set):
    qwen, llama, vit = get_llm("qwen2.5-0.5b"), get_llm("llama3.2-1b"), get_vision("vit-b-16")
    assert (qwen.family, llama.family, vit.family) == ("qwen2", "llama", "vit")
    assert qwen.tie_word_embeddings and llama.tie_word_embeddings and not qwen.lm_head_bias
    assert llama.config("real").rope_parameters["factor"] == 32.0
    assert (vit.image_size("real"), vit.patch_size("real"), vit.image_tokens("real")) == (224, 16, 196)
    assert vit.num_prefix_tokens == 1  # CLS, counted on the tiny twin
    for llm, name in ((qwen, "qwen2.5-0.5b"), (llama, "llama3.2-1b")):
        record = describe_model(llm.id, "vit-b-16")  # real size, on the meta device
        # The published count plus one embedding row for the added <image> token.
        assert record["llm_params"] == PARAMS[name] + llm.config("real").hidden_size
        assert record["vision_params"] == PARAMS["vit-b-16"]
        assert record["model_type"] == "llava" and record["image_tokens"] == 196
    # `plan`'s cost model reads the same real-size builds.
    from llava_more.pipeline.cost import model_size

    cost, _ = model_size.__wrapped__("qwen2.5-0.5b", "vit-b-16", None, "real")
    assert (cost.image_tokens, cost.vision_params, cost.encoder_passes) == (196, PARAMS["vit-b-16"], 1)


def test_tiny_twins_keep_the_class_and_the_family_quirks(declared_set):
    for llm_id in ("qwen2.5-0.5b", "llama3.2-1b"):
        real, tiny = get_llm(llm_id).config("real"), get_llm(llm_id).config("tiny")
        assert type(tiny) is type(real)
        assert (tiny.hidden_size, tiny.num_hidden_layers, tiny.num_key_value_heads) == (64, 4, 2)
        assert tiny.tie_word_embeddings == real.tie_word_embeddings
        assert tiny.rope_parameters == real.rope_parameters
    vit = get_vision("vit-b-16")
    assert type(vit.config("tiny")) is type(vit.config("real"))
    assert vit.config("tiny").qkv_bias and vit.image_tokens("tiny") == 36
    model = build_llava("qwen2.5-0.5b", "vit-b-16", size="tiny", vocab_size=100)
    assert type(model.model.language_model).__name__ == "Qwen2Model"
    assert type(model.model.vision_tower).__name__ == "ViTModel"
    ids = torch.tensor([[1, 2, 100, *[100] * 35, 3]])
    out = model(input_ids=ids, pixel_values=torch.zeros(1, 3, 48, 48))
    assert out.logits.shape == (1, 39, 101)


def test_the_tokenizers_own_chat_template_is_read_from_the_checkpoint(
    declared_set, demo_tokenizer_dir, tmp_path
):
    meta = init_model(
        "qwen2.5-0.5b", "vit-b-16", size="tiny", tokenizer_dir=demo_tokenizer_dir, out_dir=tmp_path / "b"
    )
    assert meta.template == "tokenizer" and meta.image_tokens == 36
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "b")
    template = get_template("tokenizer", tokenizer)
    assert template.end_of_turn == "<|im_end|>" and "<|im_start|>" in template.special_tokens
    assert tokenizer.eos_token == "<|im_end|>"
    encoded = encode_conversation(tokenizer, CONVERSATION, "tokenizer", num_image_tokens=36, max_length=None)
    supervised = [
        t for t, label in zip(encoded["input_ids"], encoded["labels"], strict=True) if label != IGNORE_INDEX
    ]
    assert tokenizer.decode(supervised) == "Red.<|im_end|>Two <end_of_turn> shapes.<|im_end|>"
    text = tokenizer.decode(encoded["input_ids"])
    assert "<|im_start|>system\nBe brief.<|im_end|>" in text  # ChatML, as the Qwen2 tokenizer ships it


def test_a_declared_system_prompt_and_built_in_template(declared_set, demo_tokenizer_dir, tmp_path):
    meta = init_model(
        "llama3.2-1b", "clip-l-336", size="tiny", tokenizer_dir=demo_tokenizer_dir, out_dir=tmp_path / "b"
    )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "b")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert "You answer questions about images." in prompt and prompt.startswith("<|begin_of_text|>")
    assert meta.template == "tokenizer"
    off = init_model(
        "llama3.2-1b", "clip-l-336", size="tiny", tokenizer_dir=demo_tokenizer_dir, out_dir=tmp_path / "c",
        system_prompt=False,
    )  # fmt: skip
    assert off.template == "llama3.1+no-system"


def test_models_lists_declared_backbones_beside_built_in_ones(folders, tmp_path, capsys):
    params = tmp_path / "params.yaml"
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["backbones"] = backbones_section(folders)
    params.write_text(yaml.safe_dump(raw))
    try:
        assert cli.main(["models", "--backbones", "--params", str(params), "--json"]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        by_id = {row["id"]: row for row in rows}
        assert {"llama3.1-8b", "clip-l-336", "qwen2.5-0.5b", "llama3.2-1b", "vit-b-16"} <= set(by_id)
        assert by_id["qwen2.5-0.5b"]["origin"] == "declared" and by_id["llama3.1-8b"]["origin"] == "built-in"
        assert by_id["qwen2.5-0.5b"]["family"] == "qwen2" and by_id["qwen2.5-0.5b"]["template"] == "tokenizer"
        assert by_id["vit-b-16"]["params"] == PARAMS["vit-b-16"]
        assert by_id["vit-b-16"]["source"] == str(folders["vit-b-16"])
    finally:
        declare(None)


# ---------------------------------------------------------------------------------------------- built-ins re-declared
def _comparable(config) -> dict:
    values = config.to_dict()
    for key in ("_name_or_path", "architectures", "transformers_version", "dtype"):
        values.pop(key, None)
    return values


@pytest.mark.parametrize("llm_id", list(builtin_llms()))
@pytest.mark.parametrize("with_template", [True, False], ids=["template-declared", "tokenizer-template"])
def test_built_in_llms_re_declared_give_the_same_templates_masks_and_configs(
    llm_id, with_template, demo_tokenizer_dir, tmp_path
):
    """A built-in LLM written out as a checkpoint folder (its config.json; a tokenizer carrying its chat
    template) and declared by path, with its template id or with none (the tokenizer's own)."""
    from transformers import AutoTokenizer

    builtin = get_llm(llm_id)
    folder = tmp_path / "checkpoint"
    builtin.config("real").save_pretrained(folder)
    demo = AutoTokenizer.from_pretrained(demo_tokenizer_dir)
    apply_template(demo, builtin.template).save_pretrained(folder)
    body = {"path": str(folder), **({"template": builtin.template} if with_template else {})}
    try:
        declare({"llm": {"re-declared": body}})
        again = get_llm("re-declared")
        for size in ("real", "tiny"):
            assert _comparable(again.config(size)) == _comparable(builtin.config(size))
        assert again.lm_head_bias == builtin.lm_head_bias

        ours = init_model(
            llm_id, "clip-l-336", size="tiny", tokenizer_dir=demo_tokenizer_dir, out_dir=tmp_path / "a"
        )
        theirs = init_model(
            "re-declared", "clip-l-336", size="tiny", tokenizer_dir=demo_tokenizer_dir, out_dir=tmp_path / "b"
        )
    finally:
        declare(None)
    assert theirs.template == (ours.template if with_template else "tokenizer")
    a, b = (AutoTokenizer.from_pretrained(tmp_path / name) for name in ("a", "b"))
    assert a.chat_template == b.chat_template
    assert (a.bos_token, a.eos_token, a.pad_token, len(a)) == (b.bos_token, b.eos_token, b.pad_token, len(b))
    reference, derived = get_template(ours.template, a), get_template(theirs.template, b)
    for field in ("end_of_turn", "bos_token", "reply_prefix", "assistant_header"):
        assert getattr(derived, field) == getattr(reference, field), field
    # Generation stops at the end-of-turn (the checkpoint's other EOS ids come from its generation config).
    assert derived.stop_tokens[0] == reference.stop_tokens[0] == reference.end_of_turn
    for conversation in (CONVERSATION, CONVERSATION[1:3]):
        assert encode_conversation(b, conversation, theirs.template, num_image_tokens=4, max_length=None) == (
            encode_conversation(a, conversation, ours.template, num_image_tokens=4, max_length=None)
        )
    configs = [json.loads((tmp_path / name / "config.json").read_text()) for name in ("a", "b")]
    for config in configs:
        config["text_config"].pop("_name_or_path", None)
        config["text_config"].pop("architectures", None)
    assert configs[0] == configs[1]


def test_a_tokenizer_without_a_chat_template_needs_a_declared_one(folders):
    from transformers import AutoTokenizer

    bare = AutoTokenizer.from_pretrained(folders["llama3.2-1b"])
    with pytest.raises(ConfigError, match="has no chat template; give the LLM one of the built-in templates"):
        template_from_tokenizer(bare, name="the Llama-3 tokenizer")


# ---------------------------------------------------------------------------------------------- the demo path
@pytest.mark.slow
def test_declared_pairs_train_export_and_evaluate_through_the_pipeline(folders, tmp_path):
    """A tiny study of declared backbones (Qwen2 x ViT, Llama-3.2 x CLIP) runs the demo path for real:
    Snakemake, demo tokenizer with each LLM's own chat template, encoder warm-up, both stages (mask audit
    first), export, lmms-eval on local tasks, tables."""
    from tests.test_pipeline import shrink
    from tests.workspace import BIN, make_workspace, run

    workspace = make_workspace(tmp_path / "ws")
    # The ci data at the pipeline tests' size (a few dozen samples: a few steps per stage).
    raw = shrink(yaml.safe_load((workspace / "params.yaml").read_text()))
    raw["backbones"] = backbones_section(folders)
    raw["demo_vision"] = {"steps": 20, "seed": 0}
    raw["studies"] = {
        **raw["studies"],
        "declared": {
            **raw["studies"]["ci"],
            "eval_samples": 8,
            "eval_untrained": False,
            "experiments": [
                {"llm": "qwen2.5-0.5b", "vision": "vit-b-16"},
                {"llm": "llama3.2-1b", "vision": "clip-l-336"},
            ],
            "tables": {"table1_llm": {"pretrain": "ci-lcs"}},
        },
    }
    (workspace / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    run(
        [
            str(BIN / "snakemake"),
            "--profile",
            "profiles/local",
            "--cores",
            "2",
            "all",
            "--config",
            "study=declared",
        ],
        workspace,
        timeout=1800,
    )
    table = (workspace / "results/declared/tables/table1_llm.csv").read_text()
    for exp in ("qwen2.5-0.5b_vit-b-16_ci-lcs", "llama3.2-1b_clip-l-336_ci-lcs"):
        assert exp in table
        bundle = workspace / f"runs/declared/stage2/{exp}"
        config = json.loads((bundle / "config.json").read_text())
        scores = json.loads((workspace / f"results/declared/eval/stage2/{exp}/scores.json").read_text())
        assert set(scores["columns"]) == {"GQA", "POPE"}
        meta = json.loads((bundle / "llava_more.json").read_text())
        assert meta["template"] == ("tokenizer" if exp.startswith("qwen") else "llama3.1+no-system")
        log = (workspace / f"logs/declared/stage2_{exp}.log").read_text()
        assert "loss-mask audit:" in log
    qwen = json.loads(
        (workspace / "runs/declared/stage2/qwen2.5-0.5b_vit-b-16_ci-lcs/config.json").read_text()
    )
    assert qwen["text_config"]["model_type"] == "qwen2" and qwen["vision_config"]["model_type"] == "vit"
    assert config["text_config"]["model_type"] == "llama" and config["text_config"]["tie_word_embeddings"]


def test_the_readme_says_exactly_which_pairs_are_plain_llava_checkpoints():
    from llava_more.model.describe import plain_llava_statement

    readme = " ".join((ROOT / "README.md").read_text().split())
    assert plain_llava_statement() in readme
    # And it is true of the built bundles' classes: one plain pair, one pair of each other kind.
    assert build_llava("phi4-mini", "dinov2-l-224", size="tiny").config.model_type == "llava"
    for llm, vision in (
        ("phi4-mini", "dinov2-l-reg-224"),
        ("gemma2-2b", "clip-l-336"),
        ("phi-2", "clip-l-336"),
    ):
        assert build_llava(llm, vision, size="tiny").config.model_type == "llava_more"


def test_built_in_backbones_keep_the_configs_they_had_as_hand_written_specs():
    """``tests/data/builtin_backbones.json`` was recorded from the registry before the built-ins became
    checkpoint entries (hand-written real and tiny configs, processors and prefix counts): the generic
    derivation reproduces every one of them."""
    snapshot = json.loads((ROOT / "tests/data/builtin_backbones.json").read_text())

    def plain(values):  # the snapshot's JSON form (version stamps dropped)
        values = {k: v for k, v in values.items() if k != "transformers_version"}
        return json.loads(json.dumps(values, sort_keys=True, default=str))

    assert set(snapshot["llm"]) == set(builtin_llms())
    for llm_id, recorded in snapshot["llm"].items():
        spec = get_llm(llm_id)
        assert (spec.hf_id, spec.template, spec.lm_head_bias) == (
            recorded["hf_id"],
            recorded["template"],
            recorded["lm_head_bias"],
        )
        for size in ("real", "tiny"):
            assert plain(spec.config(size).to_dict()) == recorded[size], (llm_id, size)
    for vision_id, recorded in snapshot["vision"].items():
        spec = get_vision(vision_id)
        assert spec.num_prefix_tokens == recorded["num_prefix_tokens"]
        for size in ("real", "tiny"):
            assert plain(spec.config(size).to_dict()) == recorded[size], (vision_id, size)
            assert spec.image_tokens(size) == recorded["image_tokens"][size]
            assert plain(spec.image_processor(size).to_dict()) == recorded["processor"][size]
            assert (
                plain(spec.image_processor(size, spec.s2_scales(size)).to_dict())
                == recorded["processor_s2"][size]
            )
