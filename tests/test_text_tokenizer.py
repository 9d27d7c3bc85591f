"""The demo tokenizer, per-LLM configuration and the make-tokenizer command."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from llava_more.cli import main
from llava_more.errors import ConfigError
from llava_more.text import IMAGE_TOKEN, TEMPLATE_IDS, get_template
from llava_more.text.templates import FALLBACK_PAD_TOKEN, all_special_tokens
from llava_more.text.tokenizer import apply_template, template_scaffolding, train_demo_tokenizer

CORPUS = [
    "A small red square is to the left of a large blue circle.",
    "Die Größe des Kreises ist mittel; das Quadrat ist klein.",
    "画像には三つの図形があります。日本語のテキスト。",
    "Emoji too: 🙂🎨 and accents: café, naïve, Ærø.",
]
CHAT_TEMPLATES = [t for t in TEMPLATE_IDS if t != "plain"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    return train_demo_tokenizer(CORPUS * 5, out, vocab_size=1000), out


def test_round_trips_demo_text(trained):
    tokenizer, _ = trained
    for text in [*CORPUS, "unseen: Ünïcödé ✓ 中文 \t tabs\nnewlines  double  spaces"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text


def test_training_learns_merges(trained):
    tokenizer, _ = trained
    text = CORPUS[0]
    assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) < len(text.encode()) / 2


def test_every_special_token_is_one_id_even_inside_text(trained):
    tokenizer, _ = trained
    specials = all_special_tokens()
    for template_id in TEMPLATE_IDS:
        assert set(get_template(template_id).special_tokens) <= set(specials)
    assert {IMAGE_TOKEN, FALLBACK_PAD_TOKEN} <= set(specials)
    ids = {tokenizer.convert_tokens_to_ids(token) for token in specials}
    assert None not in ids and len(ids) == len(specials)
    for token in specials:
        encoded = tokenizer(f"abc{token}déf", add_special_tokens=False)["input_ids"]
        assert tokenizer.convert_tokens_to_ids(token) in encoded
        assert tokenizer.decode(encoded) == f"abc{token}déf"


def test_saved_tokenizer_reloads_identically(trained):
    tokenizer, out = trained
    reloaded = AutoTokenizer.from_pretrained(out)
    text = f"{IMAGE_TOKEN}\n{CORPUS[2]}<|eot_id|>"
    assert (
        reloaded(text, add_special_tokens=False)["input_ids"]
        == tokenizer(text, add_special_tokens=False)["input_ids"]
    )
    assert reloaded.pad_token == FALLBACK_PAD_TOKEN


def test_training_is_deterministic(tmp_path):
    first = train_demo_tokenizer(CORPUS * 3, tmp_path / "a", vocab_size=400)
    second = train_demo_tokenizer(CORPUS * 3, tmp_path / "b", vocab_size=400)
    assert first.get_vocab() == second.get_vocab()
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (tmp_path / "b" / "tokenizer.json").read_text()


def test_too_small_a_vocab_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="vocab size 100 is too small"):
        train_demo_tokenizer(CORPUS, tmp_path, vocab_size=100)


@pytest.mark.parametrize("template_id", CHAT_TEMPLATES)
def test_apply_template_sets_the_family_special_tokens(trained, tmp_path, template_id):
    tokenizer, _ = trained
    template = get_template(template_id)
    configured = apply_template(tokenizer, template_id)
    assert configured.chat_template == template.jinja
    assert configured.bos_token == template.bos_token
    assert configured.eos_token == template.end_of_turn
    assert configured.pad_token is not None and configured.pad_token_id != configured.eos_token_id
    assert configured.padding_side == "right"
    # The input tokenizer is left as it was.
    assert tokenizer.chat_template is None and tokenizer.eos_token is None

    # The configuration survives save/load and the tokenizer's own chat template renders on its own.
    configured.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert (reloaded.bos_token, reloaded.eos_token, reloaded.pad_token) == (
        configured.bos_token,
        configured.eos_token,
        configured.pad_token,
    )
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    rendered = reloaded.apply_chat_template(messages, tokenize=False)
    assert rendered.endswith(f"Hello{template.end_of_turn}" + ("\n" if template_id == "gemma2" else ""))


def test_apply_template_plain_keeps_the_llm_bos_and_eos(trained):
    tokenizer, _ = trained
    llama = apply_template(tokenizer, "llama3.1")
    plain = apply_template(llama, "plain")
    assert plain.chat_template == get_template("plain").jinja
    assert (plain.bos_token, plain.eos_token, plain.pad_token) == (
        llama.bos_token,
        llama.eos_token,
        llama.pad_token,
    )


def write_llava_json(path, records):
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


def test_make_tokenizer_command_trains_on_llava_json(tmp_path):
    pretrain = write_llava_json(
        tmp_path / "pretrain.json",
        [
            {
                "id": "p0",
                "image": "0.png",
                "conversations": [
                    {"from": "human", "value": "<image>\n"},
                    {"from": "gpt", "value": "zebra quagga okapi"},
                ],
            },
            {
                "id": "p1",
                "image": "1.png",
                "conversations": [
                    {"from": "human", "value": "<image>\n"},
                    {"from": "gpt", "value": "zebra quagga okapi again"},
                ],
            },
        ],
    )
    instruct = write_llava_json(
        tmp_path / "instruct.json",
        [
            {
                "id": "i0",
                "conversations": [{"from": "human", "value": "Größe?"}, {"from": "gpt", "value": "groß"}],
                "caption": "xylophone xylophone",
            }
        ],
    )
    out = tmp_path / "tokenizer"
    assert (
        main(
            [
                "make-tokenizer",
                "--texts",
                str(pretrain),
                str(instruct),
                "--out",
                str(out),
                "--vocab-size",
                "400",
            ]
        )
        == 0
    )
    tokenizer = AutoTokenizer.from_pretrained(out)
    vocab = tokenizer.get_vocab()
    # Words of both files (and the caption field) were learned as whole tokens; "<image>" stayed special.
    for word in ("zebra", "Ġquagga", "Ġokapi", "xylophone"):
        assert word in vocab, word
    assert tokenizer(IMAGE_TOKEN, add_special_tokens=False)["input_ids"] == [
        tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    ]


def test_make_tokenizer_reports_bad_input_on_one_line(tmp_path, capsys):
    bad = write_llava_json(
        tmp_path / "bad.json", [{"id": "r7", "conversations": [{"from": "human", "value": 3}]}]
    )
    assert (
        main(["make-tokenizer", "--texts", str(bad), "--out", str(tmp_path / "o"), "--vocab-size", "400"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "bad.json" in err and "'r7'" in err

    missing = tmp_path / "missing.json"
    assert (
        main(["make-tokenizer", "--texts", str(missing), "--out", str(tmp_path / "o"), "--vocab-size", "400"])
        == 2
    )
    assert "missing.json" in capsys.readouterr().err


def test_template_scaffolding_is_learned(trained):
    tokenizer, _ = trained
    for text in template_scaffolding():
        # Byte-level BPE starts at one token per byte; learned merges make it several bytes per token.
        assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= len(text.encode()) / 3, text
