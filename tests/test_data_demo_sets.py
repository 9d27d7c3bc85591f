"""Demo pre-training and instruction sets: LLaVA layout, determinism, caption styles, question coverage."""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from llava_more.data import demo_questions as questions
from llava_more.data import demo_world as world
from llava_more.data.demo_files import record_rng
from llava_more.data.demo_instruct import MIX, generate_demo_instruct
from llava_more.data.demo_pretrain import generate_demo_pretrain
from llava_more.data.validate import validate_dataset
from llava_more.errors import DataError


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _captions(data_json: Path) -> list[str]:
    return [r["conversations"][1]["value"] for r in json.loads(data_json.read_text())]


def test_pretrain_layout_is_llava_json(tmp_path):
    ds = generate_demo_pretrain(tmp_path / "lcs", "lcs", 25, seed=1)
    records = json.loads(ds.json_path.read_text())
    assert ds.image_root == tmp_path / "lcs" / "images" and len(records) == 25
    for record in records:
        assert set(record) == {"id", "image", "conversations"}
        human, gpt = record["conversations"]
        assert human == {"from": "human", "value": "<image>\n"}
        assert gpt["from"] == "gpt" and gpt["value"].strip()
        with Image.open(ds.image_root / record["image"]) as image:
            assert image.format == "PNG" and image.mode == "RGB" and image.size == (96, 96)
    assert len({r["id"] for r in records}) == 25
    manifest = json.loads((tmp_path / "lcs" / "manifest.json").read_text())
    assert manifest["seed"] == 1 and manifest["kind"] == "lcs" and manifest["counts"]["records"] == 25
    assert manifest["data_json_sha256"] == hashlib.sha256(ds.json_path.read_bytes()).hexdigest()
    assert manifest["image_root"] == "images"


def test_pretrain_is_byte_identical_for_a_seed_and_differs_across_seeds(tmp_path):
    a = generate_demo_pretrain(tmp_path / "a", "mix", 30, seed=7)
    b = generate_demo_pretrain(tmp_path / "b", "mix", 30, seed=7)
    c = generate_demo_pretrain(tmp_path / "c", "mix", 30, seed=8)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert a.manifest == b.manifest
    assert a.json_path.read_bytes() != c.json_path.read_bytes()
    assert a.manifest["images_sha256"] != c.manifest["images_sha256"]


def test_regenerating_into_the_same_folder_leaves_no_stale_images(tmp_path):
    generate_demo_pretrain(tmp_path / "d", "lcs", 1200, seed=1)  # two image folders
    ds = generate_demo_pretrain(tmp_path / "d", "lcs", 5, seed=1)
    assert len([p for p in ds.image_root.rglob("*.png")]) == 5


@pytest.mark.slow  # a second interpreter importing llava_more (transformers) takes 5-15 s here
def test_generation_does_not_depend_on_the_process_hash_seed(tmp_path):
    """Another interpreter with another PYTHONHASHSEED writes the same bytes (no set/hash ordering leaks)."""
    here = tmp_path / "here"
    generate_demo_pretrain(here / "p", "mix", 12, seed=4)
    generate_demo_instruct(here / "i", 20, seed=4)
    there = tmp_path / "there"
    code = (
        "import sys; from llava_more.data.demo_pretrain import generate_demo_pretrain as p;"
        "from llava_more.data.demo_instruct import generate_demo_instruct as i;"
        "p(sys.argv[1] + '/p', 'mix', 12, 4); i(sys.argv[1] + '/i', 20, 4)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code, str(there)], check=True, env=env, timeout=120)
    assert _files(here) == _files(there)


def test_caption_styles_differ(tmp_path):
    n = 200
    caps = {
        k: _captions(generate_demo_pretrain(tmp_path / k, k, n, seed=3).json_path)
        for k in ("lcs", "alttext", "recap")
    }
    words = {k: statistics.mean(len(c.split()) for c in v) for k, v in caps.items()}
    assert words["alttext"] < words["lcs"] < words["recap"]
    assert words["recap"] > 3 * words["lcs"]
    # BLIP-like captions are lowercase and unpunctuated; alt-text has mixed casing and punctuation.
    assert all(c == c.lower() and c[-1].isalnum() for c in caps["lcs"])
    assert sum(c != c.lower() for c in caps["alttext"]) > n * 0.2
    assert sum(not c[-1].isalnum() for c in caps["alttext"]) > n * 0.2

    # Same seed, same scenes whatever the kind: recaps name every shape; alt-text is often off or wrong.
    off = 0
    for index, (recap, alt) in enumerate(zip(caps["recap"], caps["alttext"], strict=True)):
        scene = world.random_scene(record_rng("scene", 3, index))
        assert all(shape.name in recap for shape in scene.shapes), recap
        assert (f'"{scene.word.upper()}"' in recap) if scene.word else ("no text" in recap)
        main = world.main_shape(scene)
        off += not (main.color in alt.lower() and main.kind in alt.lower())
    assert 0.25 * n < off < 0.6 * n


def test_mix_is_balanced_and_made_of_the_two_styles(tmp_path):
    n = 41
    mix = json.loads(generate_demo_pretrain(tmp_path / "mix", "mix", n, seed=5).json_path.read_text())
    alt = json.loads(generate_demo_pretrain(tmp_path / "alt", "alttext", n, seed=5).json_path.read_text())
    recap = json.loads(generate_demo_pretrain(tmp_path / "recap", "recap", n, seed=5).json_path.read_text())
    styles = [r["id"].split("-")[0] for r in mix]
    assert len(mix) == n and sorted(set(styles)) == ["alttext", "recap"]
    assert abs(styles.count("alttext") - styles.count("recap")) <= 1
    for i, record in enumerate(mix):
        source = alt if styles[i] == "alttext" else recap
        assert record["conversations"] == source[i]["conversations"]
        assert record["image"] == source[i]["image"]
    assert (tmp_path / "mix" / "images").joinpath(mix[0]["image"]).read_bytes() == (
        tmp_path / "alt" / "images"
    ).joinpath(alt[0]["image"]).read_bytes()


def test_bad_arguments_are_user_errors(tmp_path):
    with pytest.raises(DataError, match="unknown demo pre-training kind 'laion'"):
        generate_demo_pretrain(tmp_path, "laion", 5, seed=0)
    with pytest.raises(DataError, match="at least 1"):
        generate_demo_instruct(tmp_path, 0, seed=0)


@pytest.fixture(scope="module")
def instruct(tmp_path_factory):
    out = tmp_path_factory.mktemp("instruct")
    return generate_demo_instruct(out, 400, seed=21)


def test_instruct_mix_layout_and_validity(instruct, tmp_path):
    records = json.loads(instruct.json_path.read_text())
    assert len(records) == 400
    kinds = [r["id"].split("-")[0] for r in records]
    for kind, share in MIX.items():
        assert kinds.count(kind) == round(400 * share)
        assert instruct.manifest["counts"][kind] == kinds.count(kind)
    text_only = [r for r in records if "image" not in r]
    assert len(text_only) == 20 and all(r["id"].startswith("text-") for r in text_only)
    assert all("<image>" not in t["value"] for r in text_only for t in r["conversations"])
    turns = [len(r["conversations"]) // 2 for r in records]
    assert min(turns) == 1 and max(turns) == 3
    # Every record passes our own validation.
    report = validate_dataset(instruct.json_path, instruct.image_root, tmp_path / "q.jsonl", 0.0)
    assert report.bad == 0 and report.clean == 400 and report.text_only == 20


def test_instruct_covers_the_benchmark_formats_with_true_answers(instruct):
    records = json.loads(instruct.json_path.read_text())
    seen = set()
    for index, record in enumerate(records):
        kind = record["id"].split("-")[0]
        if kind == "text":
            continue
        scene = world.random_scene(
            record_rng(f"instruct-{kind}", 21, index),
            word_probability=1.0 if kind == "word" else world.WORD_PROBABILITY,
        )
        with Image.open(instruct.image_root / record["image"]) as image:
            assert image.convert("RGB").tobytes() == world.render_scene(scene, 96).tobytes()
        pairs = list(zip(record["conversations"][::2], record["conversations"][1::2], strict=True))
        for human, gpt in pairs:
            q, a = human["value"].replace("<image>", "").strip(), gpt["value"]
            if q.endswith(tuple(questions.MMBENCH_POST_PROMPTS.values())):
                seen.add("choice")
                if q.endswith(questions.MMBENCH_POST_PROMPTS["cn"]):
                    seen.add("choice-cn")
                    assert "There are several options:\n" in q
                options = [line[3:] for line in q.splitlines() if line[:3] in ("A. ", "B. ", "C. ", "D. ")]
                picked = options[ord(a) - ord("A")]
                main = world.main_shape(scene)
                assert picked in (main.color, main.kind, str(len(scene.shapes)))
            elif "\nReference OCR token: " in q:
                seen.add("word")
                tokens = q.split("\nReference OCR token: ")[1].split("\n")[0].split(", ")
                assert a == scene.word and a in tokens
            elif a in ("yes", "no") and q.startswith(("Is the ", "Are there exactly", "Is there exactly")):
                seen.add("verify")
                statement = q.split("?")[0].split()
                if q.startswith("Are there exactly"):
                    assert (a == "yes") == (int(statement[3]) == len(scene.shapes)), q
                elif q.startswith("Is the background"):
                    assert (a == "yes") == (statement[-1] == scene.background), q
                elif len(statement) == 4 and statement[-1] in world.COLORS:  # Is the <kind> <colour>?
                    assert (a == "yes") == world.has_object(scene, kind=statement[2], color=statement[3]), q
            elif q.startswith("Is there ") and q.endswith(questions.SHORT_ANSWER_PROMPT):
                seen.add("existence")
                assert a in ("yes", "no")
                words = q.split("?")[0].split()
                color = next((w for w in words if w in world.COLORS), None)
                kind_word = next((w for w in words if w in world.SHAPES), None)
                assert (a == "yes") == world.has_object(scene, kind=kind_word, color=color), q
            elif q.endswith(questions.SHORT_ANSWER_PROMPT):
                seen.add("short")
                assert a == a.lower() and len(a.split()) <= 2
                if q.startswith("How many shapes"):
                    assert a == str(len(scene.shapes))
            else:
                seen.add("free-form")
                assert a.endswith((".", "!")) or kind == "detail"
    assert seen == {"choice", "choice-cn", "verify", "word", "existence", "short", "free-form"}


def test_instruct_mix_is_configurable_and_checked(tmp_path):
    mix = {"short": 0.5, "existence": 0.5}
    data = generate_demo_instruct(tmp_path / "m", 40, seed=3, mix=mix)
    kinds = (
        [r["id"].rsplit("-", 1)[0] for r in data.records]
        if hasattr(data, "records")
        else [r["id"].rsplit("-", 1)[0] for r in json.loads(data.json_path.read_text())]
    )
    assert kinds.count("short") == 20 and kinds.count("existence") == 20
    with pytest.raises(DataError, match="unknown conversation kinds"):
        generate_demo_instruct(tmp_path / "x", 10, seed=3, mix={"shortt": 1.0})
    with pytest.raises(DataError, match="sum to 1"):
        generate_demo_instruct(tmp_path / "y", 10, seed=3, mix={"short": 0.5})
