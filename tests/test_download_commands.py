"""``fetch-data`` and ``fetch-web-twin`` from the command line, on a copy of params.yaml with small entries."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from llava_more.data.demo_pretrain import generate_demo_pretrain
from llava_more.data.download import commands
from llava_more.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="llava-more")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture()
def repo(tmp_path) -> Path:
    """A checkout-like folder: params.yaml with a tiny recap twin, a tiny mix, and LCS pre-staged."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    staged = tmp_path / "staged/LLaVA-Pretrain"
    generate_demo_pretrain(staged, "lcs", 3, seed=0)
    (staged / "data.json").rename(staged / "blip_laion_cc_sbu_558k.json")
    params["pretrain_data"]["lcs"]["local_path"] = str(staged)
    params["pretrain_data"]["tiny-recap"] = {"source": "demo", "kind": "recap", "size": 6, "seed": 5}
    params["pretrain_data"]["laion+recap"]["size"] = 4
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path


def test_fetch_data_links_a_prestaged_lcs(repo, capsys):
    out = repo / "data/pretrain/lcs/raw"
    assert (
        _run(
            [
                "fetch-data",
                "--params",
                str(repo / "params.yaml"),
                "--name",
                "lcs",
                "--kind",
                "pretrain",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "manifest.json").read_text())
    assert printed["counts"]["records"] == 3 and (out / "images").is_symlink()


def test_fetch_data_mixes_the_parts_fetched_before(repo):
    for part, kind in (("laion", "alttext"), ("recap", "recap")):
        generate_demo_pretrain(repo / f"data/pretrain/{part}/raw", kind, 3, seed=1)
    out = repo / "data/pretrain/laion+recap/raw"
    _run(
        [
            "fetch-data",
            "--params",
            str(repo / "params.yaml"),
            "--name",
            "laion+recap",
            "--kind",
            "pretrain",
            "--out",
            str(out),
        ]
    )
    ids = [r["id"] for r in json.loads((out / "data.json").read_text())]
    assert sorted(i.split("-")[0] for i in ids) == ["laion", "laion", "recap", "recap"]


@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        ("demo-lcs", "pretrain", "make-demo-data pretrain"),
        ("demo-instruct", "instruct", "make-demo-data instruct"),
        ("laoin", "pretrain", "no pretrain_data entry 'laoin'"),
    ],
)
def test_fetch_data_refuses_what_it_does_not_fetch(repo, name, kind, message):
    with pytest.raises(ConfigError, match=message):
        _run(
            [
                "fetch-data",
                "--params",
                str(repo / "params.yaml"),
                "--name",
                name,
                "--kind",
                kind,
                "--out",
                str(repo / "x"),
            ]
        )


@pytest.mark.slow  # one img2dataset run: ~20 s on a busy 2-core machine
def test_fetch_web_twin_downloads_the_demo_set_like_recap_datacomp(repo, capsys):
    out, work = repo / "data/pretrain/tiny-recap-web/raw", repo / "data/pretrain/tiny-recap-web/download"
    argv = [
        "fetch-web-twin",
        "--params",
        str(repo / "params.yaml"),
        "--name",
        "tiny-recap",
        "--out",
        str(out),
    ]
    assert _run([*argv, "--output-format", "webdataset"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert json.loads(capsys.readouterr().out) == manifest  # stdout holds the result only
    assert manifest["caption_field"] == "re_caption" and manifest["seed"] == 5
    assert (
        manifest["counts"]["kept"] == 6 and manifest["counts"]["pool_rows"] == 9 + 1
    )  # 9 images, 1 dead link
    assert set(manifest["failures"]) <= {"http_404", "connection_refused"}
    assert manifest["download"]["output_format"] == "webdataset"
    assert (work / "img2dataset/00000.tar").is_file()

    # Each kept record pairs the image served at its URL with that image's recap caption.
    source = work / "demo-source"
    demo = {
        r["image"]: r["conversations"][-1]["value"] for r in json.loads((source / "data.json").read_text())
    }
    urls = {row["sample_id"]: row["url"] for row in pq.read_table(work / "outcomes.parquet").to_pylist()}
    records = json.loads((out / "data.json").read_text())
    assert len(records) == 6
    for record in records:
        relpath = urlsplit(urls[record["id"]]).path.lstrip("/")
        assert record["conversations"][-1]["value"] == demo[relpath]
        kept = np.asarray(Image.open(out / "images" / record["image"]).convert("RGB"), dtype=float)
        served = np.asarray(Image.open(source / "images" / relpath).convert("RGB"), dtype=float)
        assert kept.shape == served.shape and np.abs(kept - served).mean() < 8  # JPEG re-encoding only
