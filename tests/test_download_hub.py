"""LCS-558K and LLaVA-Instruct-665K: pre-staged copies, and real ``hf_hub_download`` against a local endpoint."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from llava_more.data.download.http_server import serve_directory
from llava_more.data.download.hub import INSTRUCT_IMAGE_SOURCES, fetch_llava_instruct, fetch_llava_pretrain
from llava_more.data.download.layout import file_sha256
from llava_more.data.llava_json import LlavaJsonDataset
from llava_more.errors import DataError

LCS_JSON = "blip_laion_cc_sbu_558k.json"
INSTRUCT_JSON = "llava_v1_5_mix665k.json"


def _caption(i: int, image: str) -> dict:
    return {
        "id": f"{i:09d}",
        "image": image,
        "conversations": [{"from": "human", "value": "<image>\n"}, {"from": "gpt", "value": f"caption {i}"}],
    }


def _jpeg(path: Path, shade: int) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (shade, 0, 0)).save(path, format="JPEG")
    return path.read_bytes()


@pytest.fixture()
def lcs_staged(tmp_path) -> Path:
    """A pre-staged LLaVA-Pretrain folder in its published layout (JSON + extracted images/)."""
    staged = tmp_path / "LLaVA-Pretrain"
    records = [_caption(i, f"{i // 1000:05d}/{i:09d}.jpg") for i in (1, 2, 1001)]
    for i, record in enumerate(records):
        _jpeg(staged / "images" / record["image"], 40 * i)
    (staged / LCS_JSON).write_text(json.dumps(records))
    return staged


def test_prestaged_lcs_is_linked_into_the_layout(tmp_path, lcs_staged):
    out = tmp_path / "data/pretrain/lcs/raw"
    manifest = fetch_llava_pretrain(out, local_path=lcs_staged)
    assert (out / "data.json").resolve() == (lcs_staged / LCS_JSON).resolve()
    assert (out / "images").resolve() == (lcs_staged / "images").resolve()
    assert manifest["counts"] == {"records": 3, "with_image": 3}
    assert manifest["origin"] == "pre-staged"
    assert manifest["data_json_sha256"] == file_sha256(lcs_staged / LCS_JSON)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    dataset = LlavaJsonDataset(out / "data.json", out / "images")  # the loader reads it as is
    assert [dataset[i]["image"].getpixel((4, 4))[0] for i in range(3)] == pytest.approx([0, 40, 80], abs=4)


def test_prestaged_lcs_with_only_the_zip_is_extracted_into_the_work_dir(tmp_path, lcs_staged):
    zip_path = lcs_staged / "images.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:  # wrapped in a top folder, as some re-zips are
        for image in (lcs_staged / "images").rglob("*.jpg"):
            zf.write(image, f"images/{image.relative_to(lcs_staged / 'images').as_posix()}")
    for image in (lcs_staged / "images").rglob("*.jpg"):
        image.unlink()
    (lcs_staged / "images/00000").rmdir()
    (lcs_staged / "images/00001").rmdir()
    (lcs_staged / "images").rmdir()
    out, work = tmp_path / "raw", tmp_path / "download"
    fetch_llava_pretrain(out, local_path=lcs_staged, work_dir=work)
    assert (out / "images").resolve() == (work / "images" / "images").resolve()
    assert (out / "images" / "00001/000001001.jpg").is_file()


def test_prestaged_lcs_errors_name_the_missing_path(tmp_path, lcs_staged):
    (lcs_staged / "images/00000/000000002.jpg").unlink()
    with pytest.raises(
        DataError, match=r"00000/000000002\.jpg: image of blip_laion_cc_sbu_558k\.json not found"
    ):
        fetch_llava_pretrain(tmp_path / "raw", local_path=lcs_staged)
    (lcs_staged / LCS_JSON).unlink()
    with pytest.raises(DataError, match=rf"{LCS_JSON}: not found; the pre-staged LCS-558K folder"):
        fetch_llava_pretrain(tmp_path / "raw", local_path=lcs_staged)
    assert not (tmp_path / "raw/manifest.json").exists()


def _hub_headers(root: Path):
    """What the Hub's resolve endpoint sends besides the file: its commit and an ETag."""

    def headers(relpath: str) -> dict[str, str]:
        path = root / relpath
        found = {"X-Repo-Commit": "0" * 40}
        if path.is_file():
            found["ETag"] = f'"{hashlib.sha256(path.read_bytes()).hexdigest()}"'
        return found

    return headers


def test_lcs_from_a_hub_endpoint_downloads_once_and_extracts(tmp_path):
    hub = tmp_path / "hub"
    files = hub / "datasets/liuhaotian/LLaVA-Pretrain/resolve/main"
    files.mkdir(parents=True)
    records = [_caption(i, f"00000/{i:09d}.jpg") for i in range(3)]
    (files / LCS_JSON).write_text(json.dumps(records))
    with zipfile.ZipFile(files / "images.zip", "w") as zf:
        for i, record in enumerate(records):
            zf.writestr(record["image"], _jpeg(tmp_path / "src" / record["image"], 50 * i))
    out, work = tmp_path / "data/pretrain/lcs/raw", tmp_path / "data/pretrain/lcs/download"
    with serve_directory(hub, headers=_hub_headers(hub)) as server:
        manifest = fetch_llava_pretrain(out, endpoint=server.base_url)
        assert manifest["origin"] == "hub" and manifest["counts"]["records"] == 3
        assert (out / "data.json").read_bytes() == (files / LCS_JSON).read_bytes()
        assert (out / "images/00000/000000002.jpg").read_bytes() == (
            tmp_path / "src/00000/000000002.jpg"
        ).read_bytes()
        assert (work / "images" / ".extracted-images.zip.json").is_file()
        first = dict(server.hits)
        assert sorted(first.values()) == [1, 1]  # one GET each for the JSON and the zip
        again = fetch_llava_pretrain(out, endpoint=server.base_url)
        assert server.hits == first  # up to date: nothing fetched twice
        assert again == manifest


def test_a_file_missing_on_the_hub_is_a_data_error(tmp_path):
    (tmp_path / "hub").mkdir()
    with serve_directory(tmp_path / "hub", headers=_hub_headers(tmp_path / "hub")) as server:
        with pytest.raises(
            DataError, match=f"could not download {LCS_JSON} from the Hub dataset liuhaotian/LLaVA-Pretrain"
        ):
            fetch_llava_pretrain(tmp_path / "raw", endpoint=server.base_url)


@pytest.fixture()
def instruct_root(tmp_path) -> Path:
    """A pre-staged LLaVA-1.5 playground: the 665K JSON and one image in each of its folders."""
    root = tmp_path / "playground"
    records = [_caption(i, f"{folder}/{i:06d}.jpg") for i, folder in enumerate(INSTRUCT_IMAGE_SOURCES)] + [
        {
            "id": "text-only",
            "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}],
        }
    ]
    for i, record in enumerate(records[:-1]):
        _jpeg(root / record["image"], 30 * i)
    (root / INSTRUCT_JSON).write_text(json.dumps(records))
    return root


def test_prestaged_instruct_checks_every_image_folder(tmp_path, instruct_root):
    out = tmp_path / "data/instruct/llava-665k/raw"
    manifest = fetch_llava_instruct(out, local_path=instruct_root)
    assert manifest["counts"]["records"] == 7 and manifest["counts"]["text_only"] == 1
    assert manifest["counts"]["images_per_folder"] == {folder: 1 for folder in sorted(INSTRUCT_IMAGE_SOURCES)}
    assert (out / "images").resolve() == instruct_root.resolve()
    assert (out / "images/vg/VG_100K_2/000005.jpg").is_file()

    for image in (instruct_root / "ocr_vqa/images").iterdir():
        image.unlink()
    (instruct_root / "ocr_vqa/images").rmdir()
    with pytest.raises(DataError) as err:
        fetch_llava_instruct(out, local_path=instruct_root)
    message = str(err.value)
    assert "ocr_vqa/images: missing image folder" in message and "OCR-VQA" in message


def test_instruct_without_an_image_root_says_where_each_folder_comes_from(tmp_path):
    with pytest.raises(DataError) as err:
        fetch_llava_instruct(tmp_path / "raw")
    message = str(err.value)
    assert "local_path" in message
    assert all(folder in message for folder in INSTRUCT_IMAGE_SOURCES)
    assert "http://images.cocodataset.org/zips/train2017.zip" in message


def test_instruct_json_from_the_hub_with_prestaged_images(tmp_path, instruct_root):
    hub = tmp_path / "hub"
    files = hub / "datasets/liuhaotian/LLaVA-Instruct-150K/resolve/main"
    files.mkdir(parents=True)
    (instruct_root / INSTRUCT_JSON).rename(files / INSTRUCT_JSON)
    with serve_directory(hub, headers=_hub_headers(hub)) as server:
        manifest = fetch_llava_instruct(tmp_path / "raw", image_root=instruct_root, endpoint=server.base_url)
    assert manifest["origin"] == "hub" and manifest["counts"]["with_image"] == 6
    assert (tmp_path / "raw/data.json").read_bytes() == (files / INSTRUCT_JSON).read_bytes()
