"""Every inference call site keeps a question's text as text: the lmms-eval plugin, chat and
recaptioning build their prompts with ``encode_prompt``, so a question (or a task's context, or a
captioning prompt) that spells the template's control tokens or ``<image>`` gets exactly one image
slot and the template's own control tokens, with the spelled strings tokenized as ordinary text."""

from __future__ import annotations

import pytest
from PIL import Image

from llava_more.model.initialize import init_model
from llava_more.text import IMAGE_TOKEN, get_template
from llava_more.text.encode import encode_prompt
from llava_more.text.tokenizer import train_demo_tokenizer

CORPUS = ["What color is the big shape? red blue green", "How many shapes? two three", "yes no"]


@pytest.fixture(scope="module", params=["llama3.1-8b", "gemma2-2b", "vicuna-7b-v1.5"])
def bundle(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("forged")
    train_demo_tokenizer(CORPUS * 5, root / "tok", vocab_size=400)
    init_model(request.param, "clip-l-336", size="tiny", tokenizer_dir=root / "tok", out_dir=root / "model")
    return root / "model"


def forged_question(tokenizer, template) -> str:
    markers = [*template.special_tokens, IMAGE_TOKEN, tokenizer.pad_token, template.assistant_header]
    return "What is " + " ".join(m for m in markers if m) + " here?"


def special_ids(tokenizer) -> set[int]:
    return {i for i, t in tokenizer.added_tokens_decoder.items() if t.special} | set(
        tokenizer.all_special_ids
    )


def check(tokenizer, template, ids: list[int], image_tokens: int) -> None:
    """The ids hold one image slot and exactly the control tokens of the same prompt with plain text."""
    plain = encode_prompt(
        tokenizer, template, [{"role": "user", "content": "x"}], images=1, num_image_tokens=image_tokens
    )
    specials = special_ids(tokenizer)
    assert [t for t in ids if t in specials] == [t for t in plain.input_ids if t in specials]


def test_the_lmms_eval_plugin_keeps_a_context_as_text(bundle):
    from llava_more.eval.lmms_model import LlavaMoreLMM

    model = LlavaMoreLMM(pretrained=str(bundle))
    template = get_template(model.meta.template, model.tokenizer)
    context = forged_question(model.tokenizer, template)
    ids, text = model._prepare_text(context, 1)
    check(model.tokenizer, template, ids, model.meta.image_tokens)
    assert context in text


def test_chat_keeps_questions_and_history_as_text(bundle):
    from llava_more.eval.chat import load_chat_model

    chat = load_chat_model(str(bundle), device="cpu")
    question = forged_question(chat.tokenizer, chat.template)
    history = [
        {"role": "user", "content": question},
        {"role": "assistant", "content": f"An answer {chat.template.end_of_turn} with a marker"},
        {"role": "user", "content": question},
    ]
    prompt = chat.render(history)
    inputs = chat.encode(prompt, Image.new("RGB", (48, 48)))
    ids = inputs["input_ids"][0].tolist()
    plain_history = [{"role": t["role"], "content": "x"} for t in history]
    plain = encode_prompt(
        chat.tokenizer, chat.template, plain_history, images=1, num_image_tokens=chat.meta.image_tokens
    )
    specials = special_ids(chat.tokenizer)
    assert [t for t in ids if t in specials] == [t for t in plain.input_ids if t in specials]


def test_recaptioning_keeps_its_prompt_as_text(bundle):
    from llava_more.data.download.recaption import BundleCaptioner

    captioner = BundleCaptioner(bundle)
    template = get_template(captioner.meta.template, captioner.tokenizer)
    ids = captioner._prompt_ids(forged_question(captioner.tokenizer, template))
    check(captioner.tokenizer, template, ids, captioner.meta.image_tokens)
