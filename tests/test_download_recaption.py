"""Re-captioning with a tiny random bundle (gibberish captions; the mechanics are what is checked)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch

from llava_more.data.demo_pretrain import generate_demo_pretrain
from llava_more.data.download import commands
from llava_more.data.download.recaption import DONE_FILE, HubCaptioner, recaption
from llava_more.data.llava_json import LlavaJsonDataset
from llava_more.errors import DataError

torch.set_num_threads(1)
N = 7
TOKENS = 6

# A chat template for messages with typed content ({"type": "image"} / {"type": "text"}), as Hub
# image-text-to-text models ship them.
TYPED_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | upper }}: {% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% endif %}\n{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    from llava_more.model.initialize import init_model
    from llava_more.text.tokenizer import train_demo_tokenizer

    root = tmp_path_factory.mktemp("recaption")
    demo = generate_demo_pretrain(root / "demo", "lcs", N, seed=0)
    captions = [r["conversations"][-1]["value"] for r in json.loads(demo.json_path.read_text())]
    train_demo_tokenizer(captions * 20, root / "tokenizer", vocab_size=400)
    init_model(
        "llama3.1-8b", "clip-l-336", size="tiny", tokenizer_dir=root / "tokenizer", out_dir=root / "bundle"
    )
    first = recaption(
        root / "bundle",
        demo.json_path,
        demo.image_root,
        root / "batched",
        batch_size=3,
        max_new_tokens=TOKENS,
    )
    return {"root": root, "demo": demo, "first": first}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_output_is_a_recap_style_dataset_in_the_common_layout(world):
    root, demo, first = world["root"], world["demo"], world["first"]
    out = root / "batched"
    assert (first.captioned, first.batches) == (N, 3)  # 3 + 3 + 1
    records = json.loads((out / "data.json").read_text())
    source = json.loads(demo.json_path.read_text())
    assert [r["id"] for r in records] == [r["id"] for r in source]
    assert [r["image"] for r in records] == [r["image"] for r in source]
    done = {line["id"]: line["caption"] for line in _lines(out / DONE_FILE)}
    assert [r["conversations"] for r in records] == [
        [{"from": "human", "value": "<image>\n"}, {"from": "gpt", "value": done[r["id"]]}] for r in source
    ]
    assert all(isinstance(c, str) for c in done.values()) and len(set(done.values())) > 1  # images matter
    assert (out / "images").resolve() == demo.image_root.resolve()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == first.manifest and manifest["counts"]["records"] == N
    assert manifest["model"] == "bundle" and manifest["max_new_tokens"] == TOKENS
    assert len(LlavaJsonDataset(out / "data.json", out / "images")) == N


def test_batched_captions_equal_one_at_a_time(world, tmp_path):
    root, demo = world["root"], world["demo"]
    single = recaption(
        root / "bundle",
        demo.json_path,
        demo.image_root,
        tmp_path / "single",
        batch_size=1,
        max_new_tokens=TOKENS,
    )
    assert single.batches == N
    assert (tmp_path / "single/data.json").read_bytes() == (root / "batched/data.json").read_bytes()


def test_rerun_skips_done_ids_and_redoes_a_line_cut_by_a_crash(world, tmp_path):
    root, demo = world["root"], world["demo"]
    out = tmp_path / "resumed"
    out.mkdir()
    lines = (root / "batched" / DONE_FILE).read_text().splitlines(keepends=True)
    (out / DONE_FILE).write_text("".join(lines[:4]) + lines[4][:20])  # killed while writing line 5
    result = recaption(
        root / "bundle", demo.json_path, demo.image_root, out, batch_size=3, max_new_tokens=TOKENS
    )
    assert (result.captioned, result.batches) == (3, 1)
    resumed = (out / DONE_FILE).read_text().splitlines(keepends=True)
    assert resumed[:4] == lines[:4] and len(resumed) == N
    assert (out / "data.json").read_bytes() == (root / "batched/data.json").read_bytes()
    again = recaption(
        root / "bundle", demo.json_path, demo.image_root, out, batch_size=3, max_new_tokens=TOKENS
    )
    assert (again.captioned, again.batches) == (0, 0)


def test_a_hugging_face_model_folder_captions_through_its_processor(world, tmp_path):
    root, demo = world["root"], world["demo"]
    hub_model = tmp_path / "hub-model"
    shutil.copytree(root / "bundle", hub_model)
    (hub_model / "llava_more.json").unlink()  # a plain transformers folder now
    (hub_model / "chat_template.jinja").write_text(TYPED_TEMPLATE)
    captioner = HubCaptioner(str(hub_model))
    result = recaption(
        captioner, demo.json_path, demo.image_root, tmp_path / "out", batch_size=4, max_new_tokens=TOKENS
    )
    assert (result.captioned, result.batches) == (N, 2)
    assert result.manifest["model"] == str(hub_model)
    single = [
        captioner.caption(
            [LlavaJsonDataset(demo.json_path, demo.image_root)[i]["image"]], "Describe.", TOKENS
        )[0]
        for i in range(2)
    ]
    batched = captioner.caption(
        [LlavaJsonDataset(demo.json_path, demo.image_root)[i]["image"] for i in range(2)], "Describe.", TOKENS
    )
    assert batched == single


def test_recaption_command_and_its_errors(world, tmp_path, capsys):
    root, demo = world["root"], world["demo"]
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command", required=True))
    argv = ["recaption", "--model", str(root / "bundle"), "--json", str(demo.json_path), "--image-root",
            str(demo.image_root), "--out", str(tmp_path / "cli"), "--batch-size", "4", "--max-new-tokens", str(TOKENS)]  # fmt: skip
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["captioned_now"] == N and printed["counts"]["records"] == N
    assert (tmp_path / "cli/data.json").read_bytes() == (root / "batched/data.json").read_bytes()
    with pytest.raises(DataError, match="image root not found"):
        recaption(root / "bundle", demo.json_path, tmp_path / "nowhere", tmp_path / "x")
