"""Demo twins of LAION-558K and Recap-DataComp-558K that take the real download path, offline.

A demo pre-training set (``llava_more.data.demo_pretrain.generate_demo_pretrain``, kind ``alttext`` or
``recap``) is served by a local HTTP server; its metadata parquet lists the images' URLs with the
caption in the real set's column (``caption`` like LAION, ``re_caption`` like Recap-DataComp), plus
dead links (404s and a refused port) as on the web. ``fetch_web_subset`` then draws, downloads
(img2dataset), drops and keeps exactly as for the real sets.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from llava_more.data.download.downloader import DownloadSettings
from llava_more.data.download.http_server import LocalServer, closed_port_url, serve_directory
from llava_more.data.download.layout import DATA_JSON, IMAGES_DIR, MANIFEST_JSON
from llava_more.data.download.mix import mix_datasets
from llava_more.data.download.web_subset import DEFAULT_OVERSAMPLE, fetch_web_subset
from llava_more.data.llava_json import read_records
from llava_more.errors import DataError

# Caption column of the real metadata each demo kind stands in for.
TWIN_CAPTION_FIELDS = {"alttext": "caption", "recap": "re_caption"}
METADATA_FILE = "metadata.parquet"
DEAD_CAPTION = "a picture that is no longer online"
# Small sets: one process, a few threads, one shard per 500 rows.
DEMO_SETTINGS = DownloadSettings(processes=1, threads=8, shard_size=500, timeout=5)


def write_twin_metadata(
    demo_dir: str | Path,
    server: LocalServer,
    out_path: str | Path,
    *,
    caption_field: str,
    seed: int,
    dead_fraction: float = 0.1,
) -> pa.Table:
    """Metadata parquet (``url`` + ``caption_field``) for a demo set whose image root ``server`` serves.

    ``dead_fraction`` of extra rows are dead links, half 404s and half a refused connection; all
    rows are shuffled by ``seed``.
    """
    demo_dir, out_path = Path(demo_dir), Path(out_path)
    records = [r for r in read_records(demo_dir / DATA_JSON) if r.get("image")]
    if server.root != (demo_dir / IMAGES_DIR).resolve():
        raise DataError(
            f"the server serves {server.root}, not the demo set's image root {demo_dir / IMAGES_DIR}"
        )
    rows = [(server.url_for(r["image"]), r["conversations"][-1]["value"]) for r in records]
    refused = closed_port_url("")  # nothing listens there
    dead = round(len(records) * dead_fraction)
    rows += [
        (server.url_for(f"gone/{i:06d}.png") if i % 2 == 0 else f"{refused}gone-{i:06d}.png", DEAD_CAPTION)
        for i in range(dead)
    ]
    random.Random(f"llava-more/demo-web/{seed}").shuffle(rows)
    table = pa.table({"url": [u for u, _ in rows], caption_field: [c for _, c in rows]})
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out_path)
    return table


def _demo_source(work: Path, kind: str, n: int, seed: int) -> Path:
    """The served demo set (reused when one of the same kind, size and seed is already there)."""
    from llava_more.data.demo_pretrain import generate_demo_pretrain

    source = work / "demo-source"
    manifest = source / MANIFEST_JSON
    if manifest.is_file():
        done = json.loads(manifest.read_text())
        if (done.get("kind"), done.get("size"), done.get("seed")) == (kind, n, seed):
            return source
    generate_demo_pretrain(source, kind, n, seed)
    return source


def fetch_demo_web(
    out_dir: str | Path,
    *,
    kind: str,
    size: int,
    seed: int,
    work_dir: str | Path | None = None,
    oversample: float = DEFAULT_OVERSAMPLE,
    pool_factor: float = 1.5,
    dead_fraction: float = 0.1,
    settings: DownloadSettings = DEMO_SETTINGS,
) -> dict:
    """The web-subset twin of a demo pre-training set (``alttext``, ``recap`` or their ``mix``); its manifest.

    The served pool holds ``ceil(size * pool_factor)`` demo images; ``mix`` builds an alt-text and
    a recap twin (seeds ``seed`` and ``seed + 1``: different images, as LAION and DataComp differ)
    and mixes them.
    """
    out = Path(out_dir)
    work = Path(work_dir) if work_dir is not None else out.parent / "download"
    if kind == "mix":
        parts = {}
        for offset, part in enumerate(("alttext", "recap")):
            fetch_demo_web(
                work / part / "raw",
                kind=part,
                size=size,
                seed=seed + offset,
                work_dir=work / part / "download",
                oversample=oversample,
                pool_factor=pool_factor,
                dead_fraction=dead_fraction,
                settings=settings,
            )
            parts[part] = work / part / "raw"
        return mix_datasets(parts, out, size=size, seed=seed)
    if kind not in TWIN_CAPTION_FIELDS:
        raise DataError(
            f"demo web twin: kind {kind!r} has no web-crawled counterpart; use alttext, recap or mix"
        )
    source = _demo_source(work, kind, math.ceil(size * pool_factor), seed)
    caption_field = TWIN_CAPTION_FIELDS[kind]
    with serve_directory(source / IMAGES_DIR) as server:
        write_twin_metadata(
            source,
            server,
            work / METADATA_FILE,
            caption_field=caption_field,
            seed=seed,
            dead_fraction=dead_fraction,
        )
        result = fetch_web_subset(
            out,
            metadata=METADATA_FILE,
            base_dir=work,
            caption_field=caption_field,
            size=size,
            seed=seed,
            oversample=oversample,
            work_dir=work,
            settings=settings,
        )
    return result.manifest
