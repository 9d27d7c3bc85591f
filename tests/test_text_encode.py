"""Loss masks: for every chat template exactly the assistant replies (+ end-of-turn) are supervised."""

from __future__ import annotations

import dataclasses

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from llava_more.errors import ConfigError, DataError
from llava_more.text import IMAGE_TOKEN, TEMPLATE_IDS, get_template
from llava_more.text.encode import (
    IGNORE_INDEX,
    SampleTooLong,
    encode_conversation,
    encode_prompt,
    generation_prompt,
)
from llava_more.text.render import render_conversation, to_messages
from llava_more.text.tokenizer import apply_template, train_demo_tokenizer

CORPUS = [
    "What is in the picture? A red square sits left of a blue circle.",
    "Wie groß ist die Größe des Objekts? Ziemlich groß.",
    "日本語で答えてください。はい、これは円です。",
    "Describe the scene 🙂 in detail. Three shapes on a gray background 🎨.",
]
CHAT_TEMPLATES = [t for t in TEMPLATE_IDS if t != "plain"]
NUM_IMAGE_TOKENS = 5
REPLIES = ["A red square. 🙂", "Die Größe ist ziemlich groß.", "日本語: 円です 🎨"]


@pytest.fixture(scope="module")
def demo_tokenizer(tmp_path_factory):
    return train_demo_tokenizer(CORPUS * 4, tmp_path_factory.mktemp("tok"), vocab_size=500)


def configured(tokenizer, template_id):
    # Stage 1 runs the plain template with the LLM's tokenizer; Llama-3.1's stands in for it here.
    return apply_template(tokenizer, "llama3.1" if template_id == "plain" else template_id)


def three_turns(with_image: bool, system: str | None = None) -> list[dict]:
    questions = ["What is this?", "Welche Größe hat es?", "日本語で説明して 🙂"]
    turns = [{"from": "system", "value": system}] if system else []
    for index, (question, reply) in enumerate(zip(questions, REPLIES, strict=True)):
        value = f"{IMAGE_TOKEN}\n{question}" if with_image and index == 0 else question
        turns += [{"from": "human", "value": value}, {"from": "gpt", "value": reply}]
    return turns


def supervised_text(tokenizer, encoded) -> str:
    ids = [
        token
        for token, label in zip(encoded["input_ids"], encoded["labels"], strict=True)
        if label != IGNORE_INDEX
    ]
    return tokenizer.decode(ids, skip_special_tokens=False)


def expected_supervised_text(tokenizer, template_id) -> str:
    template = get_template(template_id)
    end = template.end_of_turn or tokenizer.eos_token
    return "".join(template.reply_prefix + reply + end for reply in REPLIES)


@pytest.mark.parametrize("with_image", [True, False], ids=["image", "text-only"])
@pytest.mark.parametrize("template_id", TEMPLATE_IDS)
def test_only_replies_and_their_end_token_are_supervised(demo_tokenizer, template_id, with_image):
    tokenizer = configured(demo_tokenizer, template_id)
    encoded = encode_conversation(
        tokenizer, three_turns(with_image), template_id, num_image_tokens=NUM_IMAGE_TOKENS, max_length=None
    )
    ids, labels = encoded["input_ids"], encoded["labels"]
    assert len(ids) == len(labels)
    assert all(label in (IGNORE_INDEX, token) for token, label in zip(ids, labels, strict=True))
    assert supervised_text(tokenizer, encoded) == expected_supervised_text(tokenizer, template_id)

    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    image_positions = [i for i, token in enumerate(ids) if token == image_id]
    if with_image:
        assert len(image_positions) == NUM_IMAGE_TOKENS
        assert image_positions == list(range(image_positions[0], image_positions[0] + NUM_IMAGE_TOKENS))
        assert all(labels[i] == IGNORE_INDEX for i in image_positions)
    else:
        assert image_positions == []


@pytest.mark.parametrize("template_id", CHAT_TEMPLATES)
def test_a_system_turn_is_rendered_but_never_supervised(demo_tokenizer, template_id):
    tokenizer = configured(demo_tokenizer, template_id)
    system = "Answer briefly, bitte. 短く。"
    encoded = encode_conversation(
        tokenizer, three_turns(True, system=system), template_id, num_image_tokens=3, max_length=None
    )
    assert system in tokenizer.decode(encoded["input_ids"], skip_special_tokens=False)
    assert supervised_text(tokenizer, encoded) == expected_supervised_text(tokenizer, template_id)


@pytest.mark.parametrize("template_id", TEMPLATE_IDS)
def test_masks_agree_with_transformers_assistant_tokens_mask(demo_tokenizer, template_id):
    tokenizer = configured(demo_tokenizer, template_id)
    conversation = three_turns(with_image=False)
    library = tokenizer.apply_chat_template(
        to_messages(conversation),
        chat_template=get_template(template_id).jinja,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    ours = encode_conversation(tokenizer, conversation, template_id, num_image_tokens=1, max_length=None)
    assert ours["input_ids"] == library["input_ids"]
    assert [int(label != IGNORE_INDEX) for label in ours["labels"]] == library["assistant_masks"]


@pytest.mark.parametrize("template_id", CHAT_TEMPLATES)
def test_a_template_without_generation_markers_gets_the_same_masks_derived(demo_tokenizer, template_id):
    tokenizer = configured(demo_tokenizer, template_id)
    marked = get_template(template_id)
    unmarked = dataclasses.replace(
        marked,
        id=f"{template_id}-unmarked",
        jinja=marked.jinja.replace("{%- generation -%}", "").replace("{%- endgeneration -%}", ""),
    )
    assert "generation -%}" not in unmarked.jinja
    for with_image in (True, False):
        conversation = three_turns(with_image, system="Kurz. 短く。")
        derived = encode_conversation(tokenizer, conversation, unmarked, num_image_tokens=4, max_length=None)
        assert derived == encode_conversation(
            tokenizer, conversation, marked, num_image_tokens=4, max_length=None
        )


def test_a_template_that_writes_more_than_the_reply_is_refused(demo_tokenizer):
    tokenizer = apply_template(demo_tokenizer, "llama3.1")
    llama = get_template("llama3.1")
    # Without markers, and with text between the generation prompt and the reply: nothing to derive.
    chatty = dataclasses.replace(
        llama,
        id="llama3.1-chatty",
        jinja=llama.jinja.replace("{%- generation -%}", "{{- 'Sure! ' -}}").replace(
            "{%- endgeneration -%}", ""
        ),
    )
    with pytest.raises(ConfigError, match="not the reply followed by"):
        encode_conversation(tokenizer, three_turns(True), chatty, num_image_tokens=4, max_length=None)


def test_a_template_marking_the_wrong_text_raises(demo_tokenizer):
    tokenizer = apply_template(demo_tokenizer, "gemma2")
    # One supervised span per reply, but around the user turns: the count matches, the text does not.
    user_marked = (
        "{%- for m in messages -%}{%- if m['role'] == 'user' -%}"
        "{%- generation -%}{{- '<start_of_turn>user\\n' + m['content'] + '<end_of_turn>' -}}{%- endgeneration -%}"
        "{%- else -%}{{- '<start_of_turn>model\\n' + m['content'] + '<end_of_turn>' -}}{%- endif -%}{%- endfor -%}"
    )
    misplaced = dataclasses.replace(get_template("gemma2"), id="gemma2-user-marked", jinja=user_marked)
    with pytest.raises(DataError, match="not reply 1"):
        encode_conversation(tokenizer, three_turns(False), misplaced, num_image_tokens=1, max_length=None)


def test_plain_needs_a_tokenizer_with_eos(demo_tokenizer):
    with pytest.raises(ConfigError, match="eos_token"):
        encode_conversation(demo_tokenizer, three_turns(True), "plain", num_image_tokens=2, max_length=None)


def test_truncation_keeps_partial_replies_but_never_cuts_an_image(demo_tokenizer):
    tokenizer = apply_template(demo_tokenizer, "phi4")
    conversation = three_turns(True)
    full = encode_conversation(tokenizer, conversation, "phi4", num_image_tokens=8, max_length=None)
    first_supervised = next(i for i, label in enumerate(full["labels"]) if label != IGNORE_INDEX)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    last_image = max(i for i, token in enumerate(full["input_ids"]) if token == image_id)

    cut = first_supervised + 2
    truncated = encode_conversation(tokenizer, conversation, "phi4", num_image_tokens=8, max_length=cut)
    assert truncated["input_ids"] == full["input_ids"][:cut]
    assert truncated["labels"] == full["labels"][:cut]

    with pytest.raises(SampleTooLong, match="leaves no supervised token"):
        encode_conversation(tokenizer, conversation, "phi4", num_image_tokens=8, max_length=first_supervised)
    with pytest.raises(SampleTooLong, match="would cut its image tokens"):
        encode_conversation(tokenizer, conversation, "phi4", num_image_tokens=8, max_length=last_image)
    assert issubclass(SampleTooLong, DataError)


def test_llava_image_placement_is_normalised(demo_tokenizer):
    tokenizer = apply_template(demo_tokenizer, "vicuna_v1")
    image_last = [
        {"from": "human", "value": f"What is this?\n{IMAGE_TOKEN}"},
        {"from": "gpt", "value": "A circle."},
    ]
    image_first = [
        {"from": "human", "value": f"{IMAGE_TOKEN}\nWhat is this?"},
        {"from": "gpt", "value": "A circle."},
    ]
    as_roles = [
        {"role": "user", "content": f"{IMAGE_TOKEN}\nWhat is this?"},
        {"role": "assistant", "content": "A circle."},
    ]
    encoded = [
        encode_conversation(tokenizer, c, "vicuna_v1", num_image_tokens=2, max_length=512)
        for c in (image_last, image_first, as_roles)
    ]
    assert encoded[0] == encoded[1] == encoded[2]


@pytest.mark.parametrize(
    ("conversation", "message"),
    [
        ([{"from": "human", "value": "Hello?"}], "no gpt turn"),
        ([{"from": "gpt", "value": "Hi"}, {"from": "human", "value": "?"}], "alternate"),
        ([{"from": "human", "value": "a"}, {"from": "human", "value": "b"}], "alternate"),
        ([{"from": "robot", "value": "a"}], "each turn needs 'from'"),
        ([{"from": "human", "value": None}], "string 'value'"),
        (["just a string"], "must be a"),
        (
            [{"from": "human", "value": f"{IMAGE_TOKEN} {IMAGE_TOKEN} two?"}, {"from": "gpt", "value": "x"}],
            "more than one",
        ),
        (
            [{"from": "human", "value": "q"}, {"from": "gpt", "value": f"{IMAGE_TOKEN} a"}],
            "belongs in a human turn",
        ),
        (
            [
                {"from": "human", "value": "q"},
                {"from": "system", "value": "late"},
                {"from": "gpt", "value": "a"},
            ],
            "only the first turn",
        ),
    ],
)
def test_malformed_conversations_raise_data_errors(demo_tokenizer, conversation, message):
    tokenizer = apply_template(demo_tokenizer, "llama3")
    with pytest.raises(DataError, match=message):
        encode_conversation(tokenizer, conversation, "llama3", num_image_tokens=2, max_length=None)


def test_image_needs_at_least_one_feature_token(demo_tokenizer):
    tokenizer = apply_template(demo_tokenizer, "gemma2")
    with pytest.raises(ConfigError, match="num_image_tokens"):
        encode_conversation(tokenizer, three_turns(True), "gemma2", num_image_tokens=0, max_length=None)


def test_unknown_template_lists_valid_ids(demo_tokenizer):
    with pytest.raises(ConfigError, match="valid ids: llama3.1, llama3, gemma2"):
        encode_conversation(demo_tokenizer, three_turns(False), "llama4", num_image_tokens=1, max_length=None)


@pytest.mark.parametrize("with_image", [True, False], ids=["image", "text-only"])
@pytest.mark.parametrize("template_id", TEMPLATE_IDS)
def test_generation_prompt_ends_with_assistant_header_and_prefixes_training_render(
    demo_tokenizer, template_id, with_image
):
    tokenizer = configured(demo_tokenizer, template_id)
    template = get_template(template_id)
    question = "Welche Größe? 日本語 🙂"
    prompt = generation_prompt(tokenizer, template_id, question, has_image=with_image)
    assert prompt.endswith(template.assistant_header)
    assert prompt.count(IMAGE_TOKEN) == int(with_image)

    user_turn = f"{IMAGE_TOKEN}\n{question}" if with_image else question
    training = render_conversation(
        tokenizer, [{"from": "human", "value": user_turn}, {"from": "gpt", "value": "Ja."}], template
    )
    assert training.text.startswith(prompt)
    # Generation starts exactly where the supervised reply starts.
    assert training.reply_spans[0][0] == len(prompt)


def test_an_image_token_spelled_by_a_question_stays_text(demo_tokenizer):
    tokenizer = apply_template(demo_tokenizer, "llama3.1")
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    prompt = encode_prompt(
        tokenizer,
        "llama3.1",
        [{"role": "user", "content": f"{IMAGE_TOKEN}\nWhat?"}],
        images=1,
        num_image_tokens=3,
    )
    assert prompt.input_ids.count(image_id) == 3  # the one image slot, expanded; the spelled one is text
    plain = encode_prompt(
        tokenizer, "llama3.1", [{"role": "user", "content": "What?"}], images=1, num_image_tokens=3
    )
    assert len(prompt.input_ids) > len(plain.input_ids)
    assert tokenizer.decode(prompt.input_ids).count(IMAGE_TOKEN) == 4


def test_apply_template_makes_a_foreign_tokenizer_usable(tmp_path):
    """A tokenizer that knows none of our markers (like a real HF tokenizer lacking <image>) gets them added."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
        ),
    )
    foreign = PreTrainedTokenizerFast(tokenizer_object=backend)
    size_before = len(foreign)
    for template_id in CHAT_TEMPLATES:
        tokenizer = apply_template(foreign, template_id)
        template = get_template(template_id)
        assert len(tokenizer) > size_before
        for token in (*template.special_tokens, IMAGE_TOKEN, tokenizer.pad_token):
            assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1, token
        encoded = encode_conversation(
            tokenizer, three_turns(True), template_id, num_image_tokens=3, max_length=None
        )
        assert supervised_text(tokenizer, encoded) == expected_supervised_text(tokenizer, template_id)
    assert len(foreign) == size_before, "apply_template must not modify its input"
    assert foreign.convert_tokens_to_ids(IMAGE_TOKEN) is None


def test_a_tokenizer_that_splits_the_image_token_is_refused(tmp_path):
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
        ),
    )
    raw = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>")
    with pytest.raises(ConfigError, match="apply_template"):
        encode_conversation(raw, three_turns(True), "plain", num_image_tokens=3, max_length=None)
