"""Chat template registry and the exact conversation formats of each LLM family."""

from __future__ import annotations

import pytest

from llava_more.errors import ConfigError
from llava_more.text import NO_SYSTEM_SUFFIX, TEMPLATE_IDS, get_template
from llava_more.text.templates import VICUNA_SYSTEM, VISION_ASSISTANT_SYSTEM
from llava_more.text.tokenizer import apply_template, train_demo_tokenizer

CONTRACT_IDS = ["llama3.1", "llama3", "gemma2", "phi4", "vicuna_v1", "deepseek_r1", "phi2", "plain"]
ONE_TURN = [{"role": "user", "content": "<image>\nQ?"}, {"role": "assistant", "content": "A."}]
SYSTEM = "Be brief."

LLAMA = "<|start_header_id|>{role}<|end_header_id|>\n\n{text}<|eot_id|>"
EXPECTED_ONE_TURN = {
    "llama3.1": "<|begin_of_text|>"
    + LLAMA.format(role="system", text=VISION_ASSISTANT_SYSTEM)
    + LLAMA.format(role="user", text="<image>\nQ?")
    + LLAMA.format(role="assistant", text="A."),
    "gemma2": "<bos><start_of_turn>user\n<image>\nQ?<end_of_turn>\n<start_of_turn>model\nA.<end_of_turn>\n",
    "phi4": f"<|system|>{VISION_ASSISTANT_SYSTEM}<|end|><|user|><image>\nQ?<|end|><|assistant|>A.<|end|>",
    "vicuna_v1": f"<s>{VICUNA_SYSTEM} USER: <image>\nQ? ASSISTANT: A.</s>",
    "deepseek_r1": "<｜begin▁of▁sentence｜><｜User｜><image>\nQ?<｜Assistant｜>A.<｜end▁of▁sentence｜>",
    "phi2": f"{VICUNA_SYSTEM} USER: <image>\nQ? ASSISTANT: A.<|endoftext|>",
}
EXPECTED_ONE_TURN["llama3"] = EXPECTED_ONE_TURN["llama3.1"]

EXPECTED_WITH_SYSTEM = {
    "llama3.1": "<|begin_of_text|>"
    + LLAMA.format(role="system", text=SYSTEM)
    + LLAMA.format(role="user", text="Q?"),
    "gemma2": f"<bos><start_of_turn>user\n{SYSTEM}\n\nQ?<end_of_turn>\n",
    "phi4": f"<|system|>{SYSTEM}<|end|><|user|>Q?<|end|>",
    "vicuna_v1": f"<s>{SYSTEM} USER: Q? ",
    "deepseek_r1": f"<｜begin▁of▁sentence｜>{SYSTEM}<｜User｜>Q?",
    "phi2": f"{SYSTEM} USER: Q? ",
}


@pytest.fixture(scope="module")
def demo_tokenizer(tmp_path_factory):
    return train_demo_tokenizer(["Q? A. some text to learn from"] * 5, tmp_path_factory.mktemp("tok"), 400)


def test_registry_holds_the_contract_ids():
    assert list(TEMPLATE_IDS) == CONTRACT_IDS
    for template_id in CONTRACT_IDS:
        template = get_template(template_id)
        assert template.id == template_id
        assert "{%- generation -%}" in template.jinja and "{%- endgeneration -%}" in template.jinja


def test_unknown_template_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown chat template id 'llama2'; valid ids: llama3.1"):
        get_template("llama2")


@pytest.mark.parametrize("template_id", sorted(EXPECTED_ONE_TURN))
def test_one_turn_render_matches_the_family_format(demo_tokenizer, template_id):
    tokenizer = apply_template(demo_tokenizer, template_id)
    assert tokenizer.apply_chat_template(ONE_TURN, tokenize=False) == EXPECTED_ONE_TURN[template_id]


EXPECTED_NO_SYSTEM = {
    "llama3.1": "<|begin_of_text|>"
    + LLAMA.format(role="user", text="<image>\nQ?")
    + LLAMA.format(role="assistant", text="A."),
    "phi4": "<|user|><image>\nQ?<|end|><|assistant|>A.<|end|>",
    "vicuna_v1": "<s>USER: <image>\nQ? ASSISTANT: A.</s>",
    "phi2": "USER: <image>\nQ? ASSISTANT: A.<|endoftext|>",
    # Families without a default system prompt render exactly as before.
    "gemma2": EXPECTED_ONE_TURN["gemma2"],
    "deepseek_r1": EXPECTED_ONE_TURN["deepseek_r1"],
}


@pytest.mark.parametrize("template_id", sorted(EXPECTED_NO_SYSTEM))
def test_no_system_variant_drops_only_the_default_system_prompt(demo_tokenizer, template_id):
    variant = get_template(template_id + NO_SYSTEM_SUFFIX)
    assert variant.id == template_id + NO_SYSTEM_SUFFIX and variant.default_system is None
    tokenizer = apply_template(demo_tokenizer, variant.id)
    assert tokenizer.apply_chat_template(ONE_TURN, tokenize=False) == EXPECTED_NO_SYSTEM[template_id]
    # A record's own system turn is still rendered.
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Q?"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == EXPECTED_WITH_SYSTEM[template_id]


def test_no_system_variant_of_an_unknown_template_names_the_valid_ids():
    with pytest.raises(ConfigError, match=r"unknown chat template id 'llama2\+no-system'.*<id>\+no-system"):
        get_template("llama2" + NO_SYSTEM_SUFFIX)


@pytest.mark.parametrize("template_id", sorted(EXPECTED_WITH_SYSTEM))
def test_a_given_system_message_replaces_the_default(demo_tokenizer, template_id):
    tokenizer = apply_template(demo_tokenizer, template_id)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Q?"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == EXPECTED_WITH_SYSTEM[template_id]
    assert get_template(template_id).has_system_role == (template_id != "gemma2")


def test_vicuna_turns_follow_each_other_without_separator(demo_tokenizer):
    tokenizer = apply_template(demo_tokenizer, "vicuna_v1")
    messages = [*ONE_TURN, {"role": "user", "content": "Q2?"}, {"role": "assistant", "content": "A2."}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered.endswith("ASSISTANT: A.</s>USER: Q2? ASSISTANT: A2.</s>")


def test_plain_renders_image_then_caption_and_eos_only(demo_tokenizer):
    tokenizer = apply_template(apply_template(demo_tokenizer, "gemma2"), "plain")
    messages = [
        {"role": "user", "content": "<image>\nDescribe the picture."},
        {"role": "assistant", "content": "A cat."},
    ]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == "<bos><image>A cat.<end_of_turn>"
    phi = apply_template(apply_template(demo_tokenizer, "phi4"), "plain")
    assert phi.apply_chat_template(messages, tokenize=False) == "<image>A cat.<|end|>"


@pytest.mark.parametrize("template_id", CONTRACT_IDS)
def test_generation_prompt_flag_appends_the_assistant_header(demo_tokenizer, template_id):
    configured = apply_template(apply_template(demo_tokenizer, "llama3.1"), template_id)
    template = get_template(template_id)
    prompt = configured.apply_chat_template(ONE_TURN[:1], tokenize=False, add_generation_prompt=True)
    without = configured.apply_chat_template(ONE_TURN[:1], tokenize=False)
    assert prompt == without + template.assistant_header
