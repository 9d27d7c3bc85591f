"""Dataset validation: each kind of bad record is quarantined with its reason, the clean rest is kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import ImageFile

from llava_more.data import demo_world as world
from llava_more.data import validate as v
from llava_more.data.llava_json import read_records
from llava_more.data.validate import validate_dataset
from llava_more.errors import DataError
from llava_more.outputs import OutputPathError

SCENE = world.Scene(shapes=(world.Shape("circle", "red", 0, 0, "big"),), background="white", word="cat")


def _conv(*turns: tuple[str, str]) -> list[dict]:
    return [{"from": role, "value": value} for role, value in turns]


def _ok_turns() -> list[dict]:
    return _conv(("human", "<image>\nWhat color is the circle?"), ("gpt", "red"))


def _write_images(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    image = world.render_scene(SCENE)
    image.save(root / "good.jpg", format="JPEG", quality=95)
    image.save(root / "good.png", format="PNG")
    data = (root / "good.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "empty.jpg").write_bytes(b"")
    (root / "page.jpg").write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")


# (record, expected reason or None when clean); one case a line.
# fmt: off
CASES: list[tuple[dict, str | None]] = [
    ({"id": "good-jpg", "image": "good.jpg", "conversations": _ok_turns()}, None),
    ({"id": "good-png", "image": "good.png", "conversations": _conv(("human", "<image>\n"), ("gpt", "a red circle"))}, None),
    ({"id": "text-only", "conversations": _conv(("human", "Name a shape."), ("gpt", "A circle."))}, None),
    ({"id": "image-last", "image": "good.png", "conversations": _conv(("human", "Describe it.\n<image>"), ("gpt", "A circle."))}, None),
    ({"id": "missing", "image": "nowhere/missing.jpg", "conversations": _ok_turns()}, v.MISSING_IMAGE),
    ({"id": "truncated", "image": "truncated.jpg", "conversations": _ok_turns()}, v.CORRUPT_IMAGE),
    ({"id": "zero-bytes", "image": "empty.jpg", "conversations": _ok_turns()}, v.EMPTY_IMAGE),
    ({"id": "html", "image": "page.jpg", "conversations": _ok_turns()}, v.NOT_AN_IMAGE),
    ({"id": "two-tokens", "image": "good.jpg", "conversations": _conv(("human", "<image>\n<image>\nSame?"), ("gpt", "yes"))}, v.IMAGE_TOKEN_COUNT),
    ({"id": "no-token", "image": "good.jpg", "conversations": _conv(("human", "What is it?"), ("gpt", "a circle"))}, v.IMAGE_TOKEN_COUNT),
    ({"id": "token-in-reply", "image": "good.jpg", "conversations": _conv(("human", "Show it"), ("gpt", "<image> here"))}, v.IMAGE_TOKEN_COUNT),
    ({"id": "token-no-image", "conversations": _conv(("human", "<image>\nWhat is it?"), ("gpt", "a circle"))}, v.IMAGE_TOKEN_WITHOUT_IMAGE),
    ({"id": "empty-reply", "image": "good.jpg", "conversations": _conv(("human", "<image>\nColor?"), ("gpt", "  "))}, v.EMPTY_TURN),
    ({"id": "gpt-first", "image": "good.jpg", "conversations": _conv(("gpt", "<image>\nHi"), ("human", "red"))}, v.WRONG_ROLES),
    ({"id": "user-role", "image": "good.jpg", "conversations": _conv(("user", "<image>\nColor?"), ("assistant", "red"))}, v.WRONG_ROLES),
    ({"id": "no-reply", "image": "good.jpg", "conversations": _conv(("human", "<image>\nColor?"))}, v.WRONG_ROLES),
    ({"id": "no-conversations", "image": "good.jpg"}, v.BAD_CONVERSATIONS),
    ({"image": "good.jpg", "conversations": _ok_turns()}, v.MISSING_ID),
    ({"id": "image-list", "image": ["good.jpg", "good.png"], "conversations": _ok_turns()}, v.BAD_IMAGE_FIELD),
]
# fmt: on
BROKEN_LINE = '{"id": "broken", "image": "good.jpg", "conversations": [{"from": "human", "value": "<ima'


def _write_jsonl(path: Path, broken_after: int = 3) -> None:
    lines = [json.dumps(record) for record, _ in CASES]
    lines.insert(broken_after, BROKEN_LINE)
    path.write_text("\n".join(lines) + "\n")


def _quarantine(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_bad_record_is_quarantined_with_its_reason_and_the_rest_is_kept(tmp_path):
    _write_images(tmp_path / "img")
    data = tmp_path / "data.jsonl"
    _write_jsonl(data)
    report = validate_dataset(
        data, tmp_path / "img", tmp_path / "out" / "q.jsonl", max_bad_fraction=0.9, workers=3
    )

    expected_bad = {r.get("id"): reason for r, reason in CASES if reason}
    quarantined = _quarantine(tmp_path / "out" / "q.jsonl")
    got = {q["id"]: q["reason"] for q in quarantined if q["id"] is not None}
    assert got == {k: r for k, r in expected_bad.items() if k is not None}
    broken = [q for q in quarantined if q["reason"] == v.BROKEN_JSON]
    assert len(broken) == 1 and broken[0]["where"] == "line 4" and broken[0]["raw"] == BROKEN_LINE
    missing_id = [q for q in quarantined if q["reason"] == v.MISSING_ID]
    assert len(missing_id) == 1 and missing_id[0]["record"]["image"] == "good.jpg"
    by_id = {q["id"]: q for q in quarantined}
    assert "missing.jpg" in by_id["missing"]["detail"]
    assert "HTML" in by_id["html"]["detail"]
    assert "0 bytes" in by_id["zero-bytes"]["detail"]
    assert "appears 2 times" in by_id["two-tokens"]["detail"]

    clean_path = tmp_path / "out" / "data.clean.json"
    assert report.clean_path == str(clean_path)
    clean_ids = [r["id"] for r in read_records(clean_path)]
    assert clean_ids == ["good-jpg", "good-png", "text-only", "image-last"]  # original order
    assert report.total == len(CASES) + 1 and report.clean == 4 and report.bad == len(CASES) - 3
    assert report.text_only == 1
    assert report.reasons[v.WRONG_ROLES] == 3 and report.reasons[v.IMAGE_TOKEN_COUNT] == 3
    assert report.bad_fraction == pytest.approx(report.bad / report.total)


def test_a_json_array_is_validated_the_same_way(tmp_path):
    _write_images(tmp_path / "img")
    data = tmp_path / "data.json"
    data.write_text(json.dumps([record for record, _ in CASES]))
    clean = tmp_path / "train.json"
    report = validate_dataset(data, tmp_path / "img", tmp_path / "q.jsonl", 0.9, clean_path=clean)
    quarantined = _quarantine(tmp_path / "q.jsonl")
    assert [q["where"] for q in quarantined][:2] == ["index 4", "index 5"]
    assert report.clean == 4 and [r["id"] for r in json.loads(clean.read_text())][0] == "good-jpg"


def test_too_many_bad_records_raise_a_data_error_naming_the_quarantine(tmp_path):
    _write_images(tmp_path / "img")
    data = tmp_path / "data.jsonl"
    _write_jsonl(data)
    quarantine = tmp_path / "q.jsonl"
    with pytest.raises(DataError) as caught:
        validate_dataset(data, tmp_path / "img", quarantine, max_bad_fraction=0.5)
    message = str(caught.value)
    bad, total = len(CASES) - 3, len(CASES) + 1
    assert f"{bad} of {total} records are bad" in message and f"{bad / total:.2%}" in message
    assert str(quarantine) in message and "\n" not in message
    assert len(_quarantine(quarantine)) == bad  # the evidence is on disk
    assert not (tmp_path / "data.clean.json").exists()  # no clean file from a rejected set


def test_threshold_is_inclusive(tmp_path):
    _write_images(tmp_path / "img")
    records = [{"id": str(i), "image": "good.png", "conversations": _ok_turns()} for i in range(3)]
    records.append({"id": "bad", "image": "empty.jpg", "conversations": _ok_turns()})
    data = tmp_path / "d.json"
    data.write_text(json.dumps(records))
    assert validate_dataset(data, tmp_path / "img", tmp_path / "q.jsonl", 0.25).bad == 1
    with pytest.raises(DataError, match="1 of 4 records are bad"):
        validate_dataset(data, tmp_path / "img", tmp_path / "q.jsonl", 0.2)


def test_truncation_is_caught_even_if_pillow_was_relaxed_globally(tmp_path, monkeypatch):
    _write_images(tmp_path / "img")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"id": "t", "image": "truncated.jpg", "conversations": _ok_turns()}]))
    with pytest.raises(DataError, match="1 of 1"):
        validate_dataset(data, tmp_path / "img", tmp_path / "q.jsonl", 0.0)
    assert _quarantine(tmp_path / "q.jsonl")[0]["reason"] == v.CORRUPT_IMAGE
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored for whoever set it


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda p: None, "dataset file not found"),
        (lambda p: p.write_text('[{"id": 1,'), "not valid JSON"),
        (lambda p: p.write_text('{"id": 1}'), "must be a JSON array"),
        (lambda p: p.write_text("[]"), "has no records"),
    ],
)
def test_unreadable_dataset_files_are_user_errors(tmp_path, setup, match):
    data = tmp_path / "d.json"
    setup(data)
    with pytest.raises(DataError, match=match):
        validate_dataset(data, tmp_path, tmp_path / "q.jsonl", 0.1)


def test_missing_image_root_and_bad_arguments_are_user_errors(tmp_path):
    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"id": "a", "image": "x.png", "conversations": _ok_turns()}]))
    with pytest.raises(DataError, match="image root not found"):
        validate_dataset(data, tmp_path / "nope", tmp_path / "q.jsonl", 0.1)
    with pytest.raises(DataError, match="between 0 and 1"):
        validate_dataset(data, tmp_path, tmp_path / "q.jsonl", 1.5)
    with pytest.raises(OutputPathError, match="would overwrite the input"):
        validate_dataset(data, tmp_path, tmp_path / "q.jsonl", 0.1, clean_path=data)


def test_the_clean_remainder_trains(tmp_path):
    """Validation's clean file is what training reads: a stage-2 run on it finishes and exports."""
    import yaml

    from llava_more.model.bundle import load_bundle
    from llava_more.train.config import TrainConfig
    from llava_more.train.trainer import train_stage
    from tests.test_train_helpers import make_bundle

    _write_images(tmp_path / "img")
    data = tmp_path / "data.jsonl"
    _write_jsonl(data)
    report = validate_dataset(data, tmp_path / "img", tmp_path / "q.jsonl", max_bad_fraction=0.9)
    protocol = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    cfg = TrainConfig.from_protocol(protocol["protocols"]["ci"]["stage2"], max_steps=2, seed=0)
    init = make_bundle(tmp_path / "init")
    train_stage(2, init, report.clean_path, tmp_path / "img", tmp_path / "out", tmp_path / "work", cfg)
    assert load_bundle(tmp_path / "out").meta.llm_id
