"""The loss-mask audit against real tokenizers with their real chat templates (llama.cpp's GGUF
vocabularies, ``tests/real_tokenizers.py``): it passes on well-formed conversations, encoded the
tokenizer's own way, and names the record when a mask is corrupted in any of several ways."""

from __future__ import annotations

import random

import pytest

from llava_more.text import IMAGE_TOKEN, get_template
from llava_more.text.audit import MaskAuditFailed, audit_dataset, audit_sample
from llava_more.text.encode import IGNORE_INDEX, encode_conversation
from llava_more.text.render import to_messages
from llava_more.text.tokenizer import apply_template
from tests.real_tokenizers import real_tokenizer

REAL = [
    ("llama-bpe", "llama3.1"),
    ("llama-bpe", "llama3+no-system"),
    ("llama-spm", "vicuna_v1"),
    ("gpt-2", "phi2"),
    ("deepseek-llm", "deepseek_r1"),
    ("phi-3", "tokenizer"),
    ("qwen2", "tokenizer"),
    ("qwen2", "plain"),
]
WORDS = "the red square sits left of a blue circle, two 3 yes no? Größe 日本 ok".split()


@pytest.fixture(scope="module", params=REAL, ids=[f"{n}-{t}" for n, t in REAL])
def case(request):
    name, template_id = request.param
    base = real_tokenizer(name)
    if template_id == "plain":  # stage 1: the LLM's configured tokenizer, then the plain template
        base = apply_template(base, "tokenizer")
    tokenizer = apply_template(base, template_id)
    return tokenizer, template_id


def conversations(seed: int, plain: bool) -> list[list[dict]]:
    rng = random.Random(seed)
    out = []
    for _ in range(8):
        sentence = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8)))  # noqa: E731
        if plain:
            out.append([{"from": "human", "value": f"{IMAGE_TOKEN}\n"}, {"from": "gpt", "value": sentence()}])
            continue
        turns = [{"from": "system", "value": sentence()}] if rng.random() < 0.3 else []
        for index in range(rng.randint(1, 4)):
            question = sentence()
            turns += [
                {
                    "from": "human",
                    "value": f"{IMAGE_TOKEN}\n{question}" if index == 0 and rng.random() < 0.7 else question,
                },
                {"from": "gpt", "value": sentence()},
            ]
        out.append(turns)
    return out


def test_the_audit_passes_and_ids_are_the_tokenizers_own(case):
    tokenizer, template_id = case
    template = get_template(template_id, tokenizer)
    for number, conversation in enumerate(conversations(1, template_id == "plain")):
        encoded = encode_conversation(
            tokenizer, conversation, template_id, num_image_tokens=3, max_length=None
        )
        audit_sample(tokenizer, template_id, conversation, encoded, record=f"record {number}")
        # Ordinary text: the tokenizer's own tokenization of the template's own render (image collapsed).
        own = tokenizer.apply_chat_template(
            to_messages(conversation), chat_template=template.jinja, tokenize=False
        )
        image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        ids = encoded["input_ids"]
        collapsed = [t for i, t in enumerate(ids) if t != image_id or ids[i - 1] != image_id]
        assert collapsed == tokenizer(own, add_special_tokens=False)["input_ids"]


def _runs(labels):
    runs, start = [], None
    for i, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = i
        elif label == IGNORE_INDEX and start is not None:
            runs.append((start, i))
            start = None
    return runs


def corruptions(encoded):
    """Ways a hand-written mask goes wrong (each yields new labels)."""
    ids, labels = encoded["input_ids"], encoded["labels"]
    runs = _runs(labels)
    first_start, (last_start, last_end) = runs[0][0], runs[-1]

    def changed(**positions):
        new = list(labels)
        for position, value in positions.items():
            new[int(position)] = value
        return new

    yield (
        "the token before a reply (its header) is supervised",
        changed(**{str(first_start - 1): ids[first_start - 1]}),
    )
    yield "the end-of-turn token is masked", changed(**{str(last_end - 1): IGNORE_INDEX})
    yield "the first reply token is masked", changed(**{str(first_start): IGNORE_INDEX})
    shifted = [IGNORE_INDEX] + labels[:-1]
    yield (
        "the mask is shifted by one token",
        [label if label == IGNORE_INDEX else ids[i] for i, label in enumerate(shifted)],
    )
    yield (
        "a label is not the token at its position",
        changed(**{str(first_start): (ids[first_start] + 1) % 1000}),
    )
    user = next(
        i for i in range(first_start) if ids[i] not in (None,) and labels[i] == IGNORE_INDEX and i > 0
    )
    yield "a prompt token is supervised", changed(**{str(user): ids[user]})
    yield (
        "a whole reply is unsupervised",
        [IGNORE_INDEX if last_start <= i < last_end else label for i, label in enumerate(labels)],
    )  # noqa: E741
    yield "everything is supervised", list(ids)


def test_the_audit_fails_on_a_corrupted_mask_naming_the_record(case):
    tokenizer, template_id = case
    conversation = next(
        c for c in conversations(2, template_id == "plain") if sum(t["from"] == "gpt" for t in c) >= 1
    )
    encoded = encode_conversation(tokenizer, conversation, template_id, num_image_tokens=3, max_length=None)
    for what, labels in corruptions(encoded):
        bad = {"input_ids": encoded["input_ids"], "labels": labels}
        with pytest.raises(MaskAuditFailed, match="data.json: record 'r-17'"):
            audit_sample(tokenizer, template_id, conversation, bad, record="data.json: record 'r-17'")
            pytest.fail(f"the audit accepted a corrupted mask: {what}")


def test_a_sample_cut_at_max_length_may_end_inside_its_last_reply(case):
    tokenizer, template_id = case
    conversation = conversations(3, template_id == "plain")[0]
    full = encode_conversation(tokenizer, conversation, template_id, num_image_tokens=3, max_length=None)
    last_start, last_end = _runs(full["labels"])[-1]
    if last_end - last_start < 2:
        return
    cut = last_start + 1
    truncated = encode_conversation(tokenizer, conversation, template_id, num_image_tokens=3, max_length=cut)
    audit_sample(tokenizer, template_id, conversation, truncated, max_length=cut, record="cut")
    with pytest.raises(MaskAuditFailed):
        audit_sample(tokenizer, template_id, conversation, truncated, max_length=None, record="cut")


class _Source:
    json_path = "data/instruct/clean.json"

    def __init__(self, records):
        self.records = records


class _Dataset:
    """What ``audit_dataset`` reads of a training dataset: its records, kept indices and samples."""

    def __init__(self, tokenizer, template_id, records, corrupt=None):
        self.tokenizer, self.template_id, self.max_length = tokenizer, template_id, 4096
        self.source, self.indices, self.corrupt = _Source(records), list(range(len(records))), corrupt

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        import torch

        record = self.source.records[self.indices[index]]
        encoded = encode_conversation(
            self.tokenizer, record["conversations"], self.template_id, num_image_tokens=2, max_length=None
        )
        if record["id"] == self.corrupt:
            encoded["labels"] = list(encoded["input_ids"])
        return {key: torch.tensor(value) for key, value in encoded.items()}


def test_the_dataset_audit_names_the_first_bad_record(case):
    tokenizer, template_id = case
    records = [
        {"id": f"r{i}", "conversations": c} for i, c in enumerate(conversations(4, template_id == "plain"))
    ]
    assert audit_dataset(_Dataset(tokenizer, template_id, records)) == len(records)
    with pytest.raises(MaskAuditFailed, match="clean.json: record 'r5'"):
        audit_dataset(_Dataset(tokenizer, template_id, records, corrupt="r5"))


def test_a_stage_with_a_wrong_mask_refuses_to_train_naming_the_record(tmp_path, monkeypatch):
    """The audit runs inside ``train_stage`` before any step: a mask made wrong by a faulty encoder
    (here every label shifted one token right, the classic hand-counted-offset bug) stops the stage."""
    import llava_more.train.dataset as train_dataset
    from llava_more.train import TrainConfig
    from llava_more.train.trainer import train_stage
    from tests.test_train_helpers import make_bundle, make_dataset

    init = make_bundle(tmp_path / "bundle")
    data = make_dataset(tmp_path / "data", n_images=6, n_text=2)
    honest = train_dataset.encode_conversation

    def off_by_one(*args, **kwargs):
        encoded = honest(*args, **kwargs)
        ids, labels = encoded["input_ids"], [IGNORE_INDEX, *encoded["labels"][:-1]]
        return {
            "input_ids": ids,
            "labels": [label if label == IGNORE_INDEX else ids[i] for i, label in enumerate(labels)],
        }

    monkeypatch.setattr(train_dataset, "encode_conversation", off_by_one)
    config = TrainConfig(
        epochs=1, global_batch=4, per_device_batch=4, lr=1e-3, warmup_ratio=0.0, max_length=256
    )
    out = tmp_path / "out"
    with pytest.raises(MaskAuditFailed, match=r"data\.json: record 'img\d'.*supervised span 1"):
        train_stage(2, init, data, data.parent, out, tmp_path / "work", config)
    assert not out.exists()
    assert not list((tmp_path / "work").glob("checkpoint-*"))
