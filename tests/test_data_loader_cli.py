"""The LLaVA-JSON loader and the data CLI commands."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from torch.utils.data import DataLoader

from llava_more.cli import main
from llava_more.data.demo_instruct import generate_demo_instruct
from llava_more.data.llava_json import LlavaJsonDataset, open_image, read_records
from llava_more.errors import DataError


def test_dataset_yields_pil_images_and_text_only_records(tmp_path):
    ds_files = generate_demo_instruct(tmp_path / "inst", 60, seed=2)
    dataset = LlavaJsonDataset(ds_files.json_path, ds_files.image_root)
    assert len(dataset) == 60
    items = [dataset[i] for i in range(len(dataset))]
    with_image = [it for it in items if it["image"] is not None]
    text_only = [it for it in items if it["image"] is None]
    assert len(text_only) == 3 and len(with_image) == 57
    assert all(isinstance(it["image"], Image.Image) and it["image"].mode == "RGB" for it in with_image)
    assert with_image[0]["image"].size == (96, 96)
    assert all(it["conversations"][0]["from"] == "human" and it["id"] for it in items)
    lengths = dataset.modality_lengths()
    assert [length < 0 for length in lengths] == [not dataset.has_image(i) for i in range(60)]
    # Works under a torch DataLoader (what the Trainer uses), with a collate that keeps PIL images.
    batches = list(DataLoader(dataset, batch_size=16, collate_fn=list))
    assert sum(len(b) for b in batches) == 60


def test_jsonl_is_read_and_broken_lines_name_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    good = {"id": "a", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(good) + "\n")
    assert len(read_records(path)) == 2
    path.write_text(json.dumps(good) + "\n" + "{oops\n")
    with pytest.raises(DataError, match=r"d\.jsonl: line 2: broken JSON"):
        read_records(path)
    with pytest.raises(DataError, match="expected a LLaVA .json array or a .jsonl file"):
        read_records(tmp_path / "d.csv")


def test_unreadable_image_is_a_data_error_naming_file_and_record(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("<html>not an image</html>")
    with pytest.raises(DataError, match=r"bad\.jpg: image of record 'r7' is not an image"):
        open_image(bad, "r7")
    with pytest.raises(DataError, match=r"missing\.png: image of record 'r8' not found"):
        open_image(tmp_path / "missing.png", "r8")
    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"id": "r7", "image": "bad.jpg", "conversations": []}]))
    with pytest.raises(DataError, match="record 'r7'"):
        LlavaJsonDataset(data, tmp_path)[0]


def test_cli_generates_validates_and_reports_failures_on_one_line(tmp_path, capsys):
    out = tmp_path / "lcs"
    assert (
        main(
            ["make-demo-data", "pretrain", "--kind", "lcs", "--size", "12", "--seed", "3", "--out", str(out)]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["records"] == 12 and len(list((out / "images").rglob("*.png"))) == 12
    assert (
        main(["make-demo-data", "instruct", "--size", "10", "--seed", "3", "--out", str(tmp_path / "inst")])
        == 0
    )
    capsys.readouterr()

    # Break two of the twelve images, then validate with two thresholds.
    records = json.loads((out / "data.json").read_text())
    (out / "images" / records[0]["image"]).write_bytes(b"")
    (out / "images" / records[5]["image"]).unlink()
    args = ["validate-data", "--json", str(out / "data.json"), "--image-root", str(out / "images")]
    quarantine = tmp_path / "q" / "lcs.quarantine.jsonl"
    code = main([*args, "--quarantine", str(quarantine), "--max-bad-fraction", "0.1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "2 of 12 records are bad" in err and str(quarantine) in err

    clean = tmp_path / "q" / "train.json"
    report_path = tmp_path / "q" / "report.json"
    code = main(
        [
            *args,
            "--quarantine",
            str(quarantine),
            "--max-bad-fraction",
            "0.2",
            "--clean-out",
            str(clean),
            "--report",
            str(report_path),
        ]
    )
    assert code == 0
    assert len(json.loads(clean.read_text())) == 10
    report = json.loads(report_path.read_text())
    assert report["reasons"] == {"empty_image": 1, "missing_image": 1}
    assert json.loads(capsys.readouterr().out) == report

    with pytest.raises(SystemExit):  # argparse rejects a fraction outside [0, 1]
        main([*args, "--quarantine", str(quarantine), "--max-bad-fraction", "2"])
