"""Web subsets with img2dataset for real, against a local HTTP server with good and bad links.

The served pool holds good images of distinct colours (the caption names the colour), 404s, a
refused port, corrupt bytes, an HTML page and a truncated JPEG, plus metadata rows without a URL
or caption. img2dataset runs twice in this module (the first download and a one-shard resume).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from llava_more.data.download.downloader import DownloadSettings, shard_name
from llava_more.data.download.http_server import closed_port_url, serve_directory
from llava_more.data.download.metadata import draw_candidates, locate_metadata, open_pool
from llava_more.data.download.web_subset import OUTCOMES_FILE, fetch_web_subset
from llava_more.errors import DataError

GOOD = 10
SETTINGS = DownloadSettings(processes=1, threads=4, shard_size=8, timeout=5)


def _colour(i: int) -> tuple[int, int, int]:
    return (25 * i, 255 - 25 * i, (97 * i) % 256)


def _build_pool(root: Path, server) -> dict[str, tuple[str, str]]:
    """Served files + two LAION-style parquet files (``URL``/``TEXT``); returns sample_id -> (kind, path)."""
    served = root / "www"
    rows: list[tuple[str, str | None, str, str]] = []  # url, caption, kind, served path
    for i in range(GOOD):
        path = f"good/{i:02d}.png"
        (served / "good").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 16), _colour(i)).save(served / path)
        rows.append((server.url_for(path), f"a flat colour number {i}", "good", path))
    (served / "bad").mkdir()
    (served / "bad/noise.jpg").write_bytes(bytes(range(256)) * 4)
    (served / "bad/empty.jpg").write_bytes(b"")
    (served / "bad/page.html").write_text("<html><body><img src='x.jpg'></body></html>")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (0, 128, 0)).save(buffer, format="JPEG")
    (served / "bad/truncated.jpg").write_bytes(buffer.getvalue()[:180])
    refused = closed_port_url("")
    rows += [
        (server.url_for("gone/1.png"), "missing one", "http_404", "gone/1.png"),
        (server.url_for("gone/2.png"), "missing two", "http_404", "gone/2.png"),
        (f"{refused}a.png", "dead host a", "connection_refused", ""),
        (f"{refused}b.png", "dead host b", "connection_refused", ""),
        (server.url_for("bad/noise.jpg"), "noise", "not_an_image", "bad/noise.jpg"),
        (server.url_for("bad/empty.jpg"), "empty file", "empty_response", "bad/empty.jpg"),
        (server.url_for("bad/page.html"), "a web page", "not_an_image", "bad/page.html"),
        (server.url_for("bad/truncated.jpg"), "cut short", "not_an_image", "bad/truncated.jpg"),
        (server.url_for("good/00.png"), None, "skipped", ""),  # no caption: never downloaded
        ("ftp://example.org/x.png", "not http", "skipped", ""),
    ]
    # Interleave good and bad rows, then split over two files with small row groups.
    order = [rows[i] for i in (0, 10, 1, 11, 2, 12, 3, 13, 4, 14, 5, 15, 6, 16, 7, 17, 8, 18, 9, 19)]
    meta = root / "meta"
    meta.mkdir()
    for part, chunk in enumerate((order[:11], order[11:])):
        table = pa.table(
            {"URL": [r[0] for r in chunk], "TEXT": [r[1] for r in chunk], "similarity": [0.3] * len(chunk)}
        )
        pq.write_table(table, meta / f"part-{part:05d}.parquet", row_group_size=3)
    return {f"{index:09d}": (kind, path) for index, (_, _, kind, path) in enumerate(order)}


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    (root / "www").mkdir()
    with serve_directory(root / "www") as server:
        truth = _build_pool(root, server)
        first = fetch_web_subset(
            root / "laion/raw",
            metadata=str(root / "meta"),
            caption_field="caption",
            size=GOOD,
            seed=0,
            oversample=2.0,
            settings=SETTINGS,
        )
        hits_after_first = dict(server.hits)
        yield {"root": root, "server": server, "truth": truth, "first": first, "hits": hits_after_first}


def test_kept_set_is_exactly_the_good_images_with_their_captions(web):
    root, truth = web["root"], web["truth"]
    records = json.loads((root / "laion/raw/data.json").read_text())
    assert len(records) == GOOD
    assert {r["id"] for r in records} == {sid for sid, (kind, _) in truth.items() if kind == "good"}
    for record in records:
        number = int(record["conversations"][-1]["value"].rsplit(" ", 1)[1])
        assert truth[record["id"]][1] == f"good/{number:02d}.png"  # caption and URL belong together
        with Image.open(root / "laion/raw/images" / record["image"]) as image:
            pixel = image.convert("RGB").getpixel((12, 8))
        assert all(abs(a - b) <= 6 for a, b in zip(pixel, _colour(number), strict=True))  # the right image
        assert record["conversations"][0] == {"from": "human", "value": "<image>\n"}


def test_every_dropped_row_has_its_reason(web):
    truth, first = web["truth"], web["first"]
    expected = {
        sid: ("kept" if kind == "good" else kind) for sid, (kind, _) in truth.items() if kind != "skipped"
    }
    assert first.outcomes == expected
    manifest = first.manifest
    assert manifest["counts"] == {
        "pool_rows": 20, "drawn": 20, "skipped_metadata": 2, "tried": 18, "downloaded": GOOD,
        "failed_to_download": 4, "failed_to_resize": 4, "undecodable": 0, "kept": GOOD, "spare": 0,
    }  # fmt: skip
    assert manifest["skipped_metadata"] == {"no caption": 1, "not an http(s) url": 1}
    assert manifest["failures"] == {
        "connection_refused": 2,
        "empty_response": 1,
        "http_404": 2,
        "not_an_image": 3,
    }
    assert manifest["caption_field"] == "TEXT" and manifest["seed"] == 0
    assert manifest["metadata_files"] == ["part-00000.parquet", "part-00001.parquet"]
    audit = pq.read_table(web["root"] / "laion/download" / OUTCOMES_FILE).to_pylist()
    assert {row["sample_id"]: row["outcome"] for row in audit} == expected
    # Each served URL was fetched exactly once; the row without a caption never was.
    served = [path for kind, path in truth.values() if path and kind != "skipped"]
    assert web["hits"] == dict.fromkeys(served, 1)


def test_a_second_run_downloads_nothing_and_writes_the_same_bytes(web, tmp_path):
    root, server = web["root"], web["server"]
    before = {name: (root / "laion/raw" / name).read_bytes() for name in ("data.json", "manifest.json")}
    again = fetch_web_subset(
        root / "laion/raw",
        metadata=str(root / "meta"),
        caption_field="caption",
        size=GOOD,
        seed=0,
        oversample=2.0,
        settings=SETTINGS,
    )
    assert again.shards_downloaded == 0 and server.hits == web["hits"]
    assert {name: (root / "laion/raw" / name).read_bytes() for name in before} == before
    # Same seed into another folder: byte-identical files.
    elsewhere = fetch_web_subset(
        tmp_path / "copy/raw",
        metadata=str(root / "meta"),
        caption_field="caption",
        size=GOOD,
        seed=0,
        oversample=2.0,
        settings=SETTINGS,
        work_dir=root / "laion/download",
    )
    assert elsewhere.shards_downloaded == 0
    assert {name: (tmp_path / "copy/raw" / name).read_bytes() for name in before} == before


def test_an_interrupted_shard_is_downloaded_again_and_only_it(web):
    root, server, truth = web["root"], web["server"], web["truth"]
    folder = root / "laion/download/img2dataset"
    before = {name: (root / "laion/raw" / name).read_bytes() for name in ("data.json", "manifest.json")}
    (folder / f"{shard_name(1)}_stats.json").unlink()  # the shard never finished
    hits = dict(server.hits)
    resumed = fetch_web_subset(
        root / "laion/raw",
        metadata=str(root / "meta"),
        caption_field="caption",
        size=GOOD,
        seed=0,
        oversample=2.0,
        settings=SETTINGS,
    )
    assert resumed.shards_downloaded == 1
    candidates = pq.read_table(root / "laion/download/candidates.parquet").to_pylist()
    shard_one = {truth[c["sample_id"]][1] for c in candidates[8:16]} - {""}
    fetched = {path: n - hits.get(path, 0) for path, n in server.hits.items() if n != hits.get(path, 0)}
    assert fetched == dict.fromkeys(shard_one, 1)
    assert {name: (root / "laion/raw" / name).read_bytes() for name in before} == before


def test_too_few_survivors_is_an_error_that_says_to_oversample(web, tmp_path):
    with pytest.raises(DataError, match=r"only 10 of the 12 requested images survived .* raise `oversample`"):
        fetch_web_subset(
            tmp_path / "raw",
            metadata=str(web["root"] / "meta"),
            caption_field="caption",
            size=12,
            seed=0,
            oversample=1.5,
            settings=SETTINGS,
            work_dir=web["root"] / "laion/download",
        )


def test_draw_is_seeded_prefix_stable_and_reads_every_file(web, tmp_path):
    files = locate_metadata(str(web["root"] / "meta"), tmp_path)
    pool = open_pool(files, "caption")
    assert (pool.url_column, pool.caption_column, pool.total_rows) == ("URL", "TEXT", 20)
    a, b = draw_candidates(pool, 12, seed=7), draw_candidates(pool, 12, seed=7)
    assert a.table.equals(b.table)
    other = draw_candidates(pool, 12, seed=8)
    assert a.table.column("sample_id").to_pylist() != other.table.column("sample_id").to_pylist()
    # A larger oversampling factor extends the list; it does not reshuffle it.
    assert draw_candidates(pool, 5, seed=7).table.equals(a.table.slice(0, 5))
    everything = draw_candidates(pool, 100, seed=7)
    assert everything.table.num_rows == 18 and everything.drawn == 20
    ids = everything.table.column("sample_id").to_pylist()
    assert len(set(ids)) == 18 and any(int(i) >= 11 for i in ids)  # rows of the second file too
    urls = dict(zip(ids, everything.table.column("url").to_pylist(), strict=True))
    assert all(urls[sid].endswith(path) for sid, (kind, path) in web["truth"].items() if path and sid in urls)


def test_metadata_without_the_caption_column_names_the_columns(web, tmp_path):
    with pytest.raises(DataError, match=r"no caption column 're_caption' \(columns: URL, TEXT, similarity\)"):
        open_pool(locate_metadata(str(web["root"] / "meta"), tmp_path), "re_caption")
    with pytest.raises(DataError, match="no such file or folder"):
        locate_metadata("./nowhere/meta.parquet", tmp_path)
