"""``llava-more chat`` on a tiny random bundle: one-shot CLI, streaming, multi-turn history, the HF path, errors.

A random model answers nonsense, so the tests compare answers between paths that must agree (streamed
vs plain ``generate``, subprocess vs in-process, bundle vs HF processor) and check the prompts.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from llava_more import cli
from llava_more.eval.chat import (
    BundleChatModel,
    ChatSession,
    ProcessorChatModel,
    chat_loop,
    load_chat_model,
)
from llava_more.model.bundle import META_FILE
from llava_more.text import IMAGE_TOKEN
from llava_more.text.encode import generation_prompt
from tests.test_train_helpers import COLOURS, cli_env, make_bundle

torch.set_num_threads(1)

QUESTION = "What colour is the square?"
FOLLOW_UP = "Say the name of a shape."
MAX_NEW = 8


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("chat"), seed=3)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("images")
    wide, square = folder / "wide.png", folder / "square.png"
    Image.new("RGB", (64, 40), COLOURS["red"]).save(wide)
    Image.new("RGB", (40, 40), COLOURS["blue"]).save(square)
    return {"wide": wide, "square": square}


@pytest.fixture(scope="module")
def chat_model(bundle) -> BundleChatModel:
    model = load_chat_model(str(bundle), device="cpu")
    assert isinstance(model, BundleChatModel)
    return model


def _session(chat_model, image_path: Path) -> ChatSession:
    return ChatSession(chat_model, Image.open(image_path).convert("RGB"), max_new_tokens=MAX_NEW)


def _chat_cli(bundle: Path, image: Path, *extra: str) -> list[str]:
    return ["chat", "--model", str(bundle), "--image", str(image), "--device", "cpu",
            "--max-new-tokens", str(MAX_NEW), *extra]  # fmt: skip


def test_streamed_answer_equals_plain_greedy_generate(chat_model, bundle, images):
    from llava_more.eval.lmms_model import LlavaMoreLMM

    session = _session(chat_model, images["wide"])
    streamed = io.StringIO()
    answer = session.ask(QUESTION, streamed)
    assert answer and streamed.getvalue() == answer + "\n"

    # The first turn is the plugin's evaluation prompt, token for token and pixel for pixel.
    tokenizer = chat_model.tokenizer
    assert session.last_prompt == generation_prompt(
        tokenizer, chat_model.meta.template, QUESTION, has_image=True
    )
    inputs = chat_model.encode(session.last_prompt, session.image)
    plugin = LlavaMoreLMM(pretrained=str(bundle))
    plugin_ids, _ = plugin._prepare_text(QUESTION, num_images=1)
    assert inputs["input_ids"][0].tolist() == plugin_ids
    assert torch.equal(inputs["pixel_values"], plugin._pixel_values([session.image]))

    with torch.inference_mode():
        output = chat_model.model.generate(
            **inputs, max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=chat_model.stop_token_ids,
            pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
    plain = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    assert answer == plain


def test_one_shot_cli_prints_the_answer_and_exits(bundle, chat_model, images):
    expected = _session(chat_model, images["wide"]).ask(QUESTION, io.StringIO())
    command = [sys.executable, "-m", "llava_more", *_chat_cli(bundle, images["wide"], "--query", QUESTION)]
    done = subprocess.run(command, capture_output=True, text=True, env=cli_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected + "\n"


def test_interactive_loop_keeps_history_and_resets(chat_model, images):
    session = _session(chat_model, images["wide"])
    out, notices = io.StringIO(), io.StringIO()
    assert chat_loop(session, io.StringIO(f"{QUESTION}\n\n{FOLLOW_UP}\n"), out, notices) == 2
    first, second = out.getvalue().splitlines()
    assert first and second
    assert [turn["role"] for turn in session.history] == ["user", "assistant"] * 2
    assert session.history[1]["content"] == first and session.history[3]["content"] == second
    # The second prompt holds the first exchange, and the image only once (in the first user turn).
    prompt = session.last_prompt
    assert prompt.index(QUESTION) < prompt.index(first) < prompt.index(FOLLOW_UP)
    assert prompt.count(IMAGE_TOKEN) == 1 and prompt.index(IMAGE_TOKEN) < prompt.index(QUESTION)
    assert ">>> " in notices.getvalue()

    # /reset forgets the conversation: the same question gets the same first answer; exit stops reading.
    out = io.StringIO()
    assert chat_loop(session, io.StringIO(f"/reset\n{QUESTION}\nexit\n{FOLLOW_UP}\n"), out) == 1
    assert out.getvalue().splitlines() == [first]
    assert len(session.history) == 2


def test_interactive_cli_answers_each_stdin_line(bundle, chat_model, images, monkeypatch, capsys):
    session = _session(chat_model, images["wide"])
    expected = [session.ask(QUESTION, io.StringIO()), session.ask(FOLLOW_UP, io.StringIO())]
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{QUESTION}\n{FOLLOW_UP}\n"))
    assert cli.main(_chat_cli(bundle, images["wide"])) == 0
    assert capsys.readouterr().out.splitlines() == expected


@pytest.mark.parametrize("template", ["string-content", "structured-content"])
def test_hf_folder_matches_the_bundle(template, bundle, chat_model, images, tmp_path):
    """A bundle's own template reads HF's list-of-parts content; one stripped of that preamble (a
    string-only template) is driven with string content. Both answer as the bundle does."""
    from llava_more.text.templates import ECOSYSTEM_MESSAGES

    folder = tmp_path / "hf"
    shutil.copytree(bundle, folder, ignore=shutil.ignore_patterns(META_FILE))
    jinja = folder / "chat_template.jinja"
    assert ECOSYSTEM_MESSAGES in jinja.read_text()
    if template == "string-content":
        jinja.write_text(jinja.read_text().replace(ECOSYSTEM_MESSAGES, ""))
    hf_model = load_chat_model(str(folder), device="cpu")
    assert isinstance(hf_model, ProcessorChatModel)
    assert hf_model._structured == (template == "structured-content")

    # On a square image padding changes nothing, so both paths see the same pixels and prompt.
    reference = _session(chat_model, images["square"])
    hf = _session(hf_model, images["square"])
    for question in (QUESTION, FOLLOW_UP):
        streamed = io.StringIO()
        answer = hf.ask(question, streamed)
        assert answer == reference.ask(question, io.StringIO())
        assert streamed.getvalue() == answer + "\n"
        assert hf.last_prompt == reference.last_prompt


@pytest.mark.parametrize("flag", ["--load-in-8bit", "--load-in-4bit"])
def test_quantization_on_cpu_is_a_one_line_error(flag, bundle, images, capsys):
    assert cli.main(_chat_cli(bundle, images["wide"], "--query", QUESTION, flag)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert flag in err and "GPU" in err and "Traceback" not in err


def test_input_errors_are_one_line(bundle, images, tmp_path, capsys):
    missing = tmp_path / "nope.png"
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    cases = [
        (_chat_cli(bundle, missing, "--query", QUESTION), [str(missing), "not found"]),
        (_chat_cli(bundle, broken, "--query", QUESTION), [str(broken), "not an image"]),
        (_chat_cli(empty, images["wide"], "--query", QUESTION), [str(empty), "not a model folder"]),
        (
            _chat_cli(bundle, images["wide"], "--query", QUESTION, "--max-new-tokens", "0"),
            ["--max-new-tokens"],
        ),
    ]
    for argv, expected in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert all(text in err for text in expected), err


def test_streamer_holds_back_stop_strings_and_trailing_space(chat_model):
    from llava_more.eval.chat import _AnswerStreamer

    out = io.StringIO()
    streamer = _AnswerStreamer(chat_model.tokenizer, out, ["USER:"])
    shown = []
    for chunk in [" Hello ", "world. ", "US", "ER: next turn", " more"]:
        streamer.on_finalized_text(chunk)
        shown.append(out.getvalue())
    streamer.on_finalized_text("", stream_end=True)
    # "US" could start the stop string, and the space before it could end the answer: both wait.
    assert shown == ["Hello", "Hello world.", "Hello world.", "Hello world.", "Hello world."]
    assert out.getvalue() == "Hello world.\n"

    out = io.StringIO()
    streamer = _AnswerStreamer(chat_model.tokenizer, out, ["USER:"])
    for chunk in ["a US", "A flag "]:
        streamer.on_finalized_text(chunk)
    streamer.on_finalized_text("", stream_end=True)
    assert out.getvalue() == "a USA flag\n"
