"""The balanced mix of finished pre-training sets (LAION + Recap in the paper, demo sets here)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from llava_more.data.demo_pretrain import generate_demo_pretrain
from llava_more.data.download.mix import balanced_shares, mix_datasets
from llava_more.data.llava_json import LlavaJsonDataset
from llava_more.errors import DataError


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("parts")
    generate_demo_pretrain(root / "laion", "alttext", 7, seed=1)
    generate_demo_pretrain(root / "recap", "recap", 6, seed=2)
    return {"laion": root / "laion", "recap": root / "recap"}


def test_shares_are_balanced_and_sum_to_the_total():
    assert balanced_shares(9, ["laion", "recap"]) == {"laion": 5, "recap": 4}
    assert balanced_shares(558128, ["laion", "recap"]) == {"laion": 279064, "recap": 279064}
    assert sum(balanced_shares(10, ["a", "b", "c"]).values()) == 10


def test_mix_is_balanced_of_the_requested_total_and_loadable(parts, tmp_path):
    manifest = mix_datasets(parts, tmp_path / "mix", size=9, seed=0)
    records = json.loads((tmp_path / "mix/data.json").read_text())
    assert len(records) == 9 and manifest["counts"]["records"] == 9
    assert Counter(r["id"].split("-", 1)[0] for r in records) == {"laion": 5, "recap": 4}
    assert len({r["id"] for r in records}) == 9
    # Captions travel with their images: each record is its part's record, image and caption.
    for record in records:
        part, original_id = record["id"].split("-", 1)
        source = {r["id"]: r for r in json.loads((parts[part] / "data.json").read_text())}[original_id]
        assert record["conversations"] == source["conversations"]
        assert record["image"] == f"{part}/{source['image']}"
        assert (tmp_path / "mix/images" / record["image"]).read_bytes() == (
            parts[part] / "images" / source["image"]
        ).read_bytes()
    assert manifest["counts"]["parts"]["laion"]["taken"] == 5
    assert (
        manifest["counts"]["parts"]["recap"]["data_json_sha256"]
        == json.loads((parts["recap"] / "manifest.json").read_text())["data_json_sha256"]
    )
    dataset = LlavaJsonDataset(tmp_path / "mix/data.json", tmp_path / "mix/images")
    assert dataset[0]["image"].size == (96, 96)


def test_mix_is_deterministic_per_seed(parts, tmp_path):
    mix_datasets(parts, tmp_path / "a", size=8, seed=3)
    mix_datasets(parts, tmp_path / "b", size=8, seed=3)
    mix_datasets(parts, tmp_path / "c", size=8, seed=4)
    for name in ("data.json", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    ids = lambda d: [r["id"] for r in json.loads((tmp_path / d / "data.json").read_text())]  # noqa: E731
    assert ids("a") != ids("c")


def test_a_part_too_small_or_missing_is_a_data_error(parts, tmp_path):
    with pytest.raises(DataError, match=r"part 'recap' has 6 image records, fewer than its share 7"):
        mix_datasets(parts, tmp_path / "mix", size=14, seed=0)
    with pytest.raises(DataError, match=r"part 'laion\+' of the mix is not there; fetch it first"):
        mix_datasets({"laion+": tmp_path / "nowhere"}, tmp_path / "mix", size=2, seed=0)
