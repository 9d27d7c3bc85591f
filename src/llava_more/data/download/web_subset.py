"""LAION-558K and Recap-DataComp-558K: a seeded subset of a web-crawled pool, downloaded with img2dataset.

How the LLaVA-MORE paper drew its subsets is not published, so ours is defined here: draw
``ceil(size * oversample)`` usable rows from the metadata with the seeded stream of
``metadata.draw_candidates`` (oversampling because 10-30% of web links are dead), download them
with img2dataset, and keep the ``size`` lowest-ranked rows whose image arrived and decodes. The
manifest records the seed, the counts (drawn, tried, downloaded, kept) and why rows were dropped.

For a given seed, metadata and download outcome, every output file is byte-identical. (The web
itself changes, so two downloads months apart may differ; the manifest says by how much.)
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from llava_more.data.download.downloader import (
    DownloadSettings,
    RowResult,
    decodes,
    download_candidates,
    read_results,
    shard_name,
    stored_images,
)
from llava_more.data.download.layout import (
    DATA_JSON,
    IMAGES_DIR,
    caption_record,
    finish_layout,
    link_or_copy,
    link_path,
    reset_outputs,
)
from llava_more.data.download.metadata import draw_candidates, locate_metadata, open_pool
from llava_more.errors import DataError

logger = logging.getLogger(__name__)

DEFAULT_OVERSAMPLE = 1.5
MAX_FAILURE_MESSAGES = 50
CANDIDATES_FILE = "candidates.parquet"
OUTCOMES_FILE = "outcomes.parquet"
IMG2DATASET_DIR = "img2dataset"
UNDECODABLE = "undecodable after download"

# img2dataset's error messages -> a short reason (the full messages are kept too).
_REASONS = [
    (re.compile(r"HTTP Error (\d+)"), lambda m: f"http_{m.group(1)}"),
    (re.compile(r"Connection refused"), lambda m: "connection_refused"),
    (re.compile(r"timed? ?out", re.IGNORECASE), lambda m: "timeout"),
    (
        re.compile(r"Name or service not known|nodename nor servname|getaddrinfo|No address", re.I),
        lambda m: "dns",
    ),
    (re.compile(r"SSL|CERTIFICATE", re.IGNORECASE), lambda m: "ssl"),
    (
        re.compile(r"Connection reset|Remote end closed|RemoteDisconnected", re.I),
        lambda m: "connection_reset",
    ),
    (re.compile(r"X-Robots-Tag"), lambda m: "disallowed_by_x_robots_tag"),
    (re.compile(r"Image decoding error|cannot identify image"), lambda m: "not_an_image"),
    (re.compile(r"!buf\.empty\(\)"), lambda m: "empty_response"),  # OpenCV on a 0-byte body
    (
        re.compile(r"image too small|image area too large|aspect ratio too large"),
        lambda m: "filtered_by_size",
    ),
    (re.compile(re.escape(UNDECODABLE)), lambda m: "undecodable"),
]


def failure_reason(message: str | None) -> str:
    """A short, stable name for why a row was dropped (``http_404``, ``connection_refused``...)."""
    text = message or ""
    for pattern, name in _REASONS:
        match = pattern.search(text)
        if match:
            return name(match)
    return "other"


@dataclass(frozen=True)
class WebSubsetResult:
    manifest: dict
    outcomes: dict[str, str]  # sample_id -> "kept", "spare" or a failure reason
    shards_downloaded: int


def _write_table(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _check_stats(folder: Path, results: list[RowResult], shard_count: int) -> None:
    """img2dataset's per-shard stats and its per-row parquet must tell the same story."""
    per_shard = Counter(r.shard for r in results)
    successes = Counter(r.shard for r in results if r.status == "success")
    for shard in range(shard_count):
        name = shard_name(shard)
        stats = json.loads((folder / f"{name}_stats.json").read_text())
        if stats.get("count") != per_shard[name] or stats.get("successes") != successes[name]:
            raise DataError(
                f"{folder / (name + '_stats.json')}: img2dataset's stats ({stats.get('count')} rows, "
                f"{stats.get('successes')} successes) disagree with {name}.parquet ({per_shard[name]}, "
                f"{successes[name]}); delete the shard's files and rerun"
            )


def _use_prestaged(out: Path, local_path: Path) -> dict:
    """A subset downloaded elsewhere: a folder with ``data.json`` and ``images/`` is linked as is."""
    for path in (local_path / DATA_JSON, local_path / IMAGES_DIR):
        if not path.exists():
            raise DataError(
                f"{path}: not found; a pre-staged web subset (local_path) is a folder holding {DATA_JSON} "
                f"(LLaVA JSON) and {IMAGES_DIR}/ (the image root its paths are relative to)"
            )
    link_path(local_path / DATA_JSON, out / DATA_JSON)
    link_path(local_path / IMAGES_DIR, out / IMAGES_DIR)
    records = json.loads((local_path / DATA_JSON).read_text(encoding="utf-8"))
    return finish_layout(
        out, {"source": "web-subset", "origin": "pre-staged", "counts": {"records": len(records)}}
    )


def fetch_web_subset(
    out_dir: str | Path,
    *,
    metadata: str,
    caption_field: str,
    size: int,
    seed: int,
    oversample: float = DEFAULT_OVERSAMPLE,
    work_dir: str | Path | None = None,
    settings: DownloadSettings | None = None,
    local_path: str | Path | None = None,
    base_dir: str | Path = ".",
    endpoint: str | None = None,
) -> WebSubsetResult:
    """Draw, download and keep ``size`` image-caption pairs; write the common layout under ``out_dir``.

    ``work_dir`` (default: ``<out_dir>/../download``) keeps the candidates and img2dataset's
    shards between runs, so a rerun downloads only what is missing.
    """
    out = Path(out_dir)
    work = Path(work_dir) if work_dir is not None else out.parent / "download"
    settings = settings or DownloadSettings()
    reset_outputs(out)
    if local_path is not None:
        return WebSubsetResult(_use_prestaged(out, Path(local_path)), {}, 0)
    if size < 1 or oversample < 1:
        raise DataError(f"web subset: size must be >= 1 and oversample >= 1 (got {size}, {oversample})")

    files = locate_metadata(metadata, work, Path(base_dir), endpoint)
    pool = open_pool(files, caption_field)
    candidates = draw_candidates(pool, math.ceil(size * oversample), seed)
    if candidates.table.num_rows < size:
        raise DataError(
            f"metadata {metadata!r}: only {candidates.table.num_rows} usable rows (of {pool.total_rows}; skipped: "
            f"{candidates.skipped}), fewer than the {size} requested; lower size or add metadata files"
        )
    candidates_path = work / CANDIDATES_FILE
    _write_table(candidates.table, candidates_path)
    folder = work / IMG2DATASET_DIR
    shards_downloaded = download_candidates(candidates_path, folder, settings)
    shard_count = math.ceil(candidates.table.num_rows / settings.shard_size)
    results = read_results(folder, shard_count)
    if [r.rank for r in results] != list(range(candidates.table.num_rows)):
        raise DataError(
            f"{folder}: img2dataset's results do not cover every candidate; delete {folder} and rerun"
        )
    _check_stats(folder, results, shard_count)

    captions = candidates.table.column("caption").to_pylist()
    outcomes: dict[int, str] = {}
    messages: Counter = Counter()
    for row in results:
        if row.status != "success":
            outcomes[row.rank] = failure_reason(row.error)
            messages[row.error or row.status] += 1

    images_dir = out / IMAGES_DIR
    if images_dir.is_symlink() or images_dir.is_file():
        images_dir.unlink()
    elif images_dir.exists():
        shutil.rmtree(images_dir)
    records: list[dict] = []
    successes = [row for row in results if row.status == "success"]
    for row, data, source in stored_images(folder, successes, settings):
        if len(records) == size:
            break
        if not decodes(data):
            outcomes[row.rank] = "undecodable"
            messages[UNDECODABLE] += 1
            continue
        position = len(records)
        relpath = f"{position // 1000:05d}/{position:09d}.{settings.encode_format}"
        if source is not None:
            link_or_copy(source, images_dir / relpath)
        else:
            (images_dir / relpath).parent.mkdir(parents=True, exist_ok=True)
            (images_dir / relpath).write_bytes(data)
        records.append(caption_record(row.sample_id, relpath, captions[row.rank]))
        outcomes[row.rank] = "kept"
    for row in successes:
        outcomes.setdefault(row.rank, "spare")

    reasons = Counter(v for v in outcomes.values() if v not in ("kept", "spare"))
    counts = {
        "pool_rows": pool.total_rows,
        "drawn": candidates.drawn,
        "skipped_metadata": sum(candidates.skipped.values()),
        "tried": len(results),
        "downloaded": len(successes),
        "failed_to_download": sum(r.status == "failed_to_download" for r in results),
        "failed_to_resize": sum(r.status == "failed_to_resize" for r in results),
        "undecodable": reasons.get("undecodable", 0),
        "kept": len(records),
        "spare": sum(v == "spare" for v in outcomes.values()),
    }
    sample_ids = candidates.table.column("sample_id").to_pylist()
    _write_table(
        pa.table(
            {
                "rank": list(range(len(results))),
                "sample_id": sample_ids,
                "url": candidates.table.column("url"),
                "outcome": [outcomes[r.rank] for r in results],
                "error": [r.error for r in results],
            }
        ),
        work / OUTCOMES_FILE,
    )
    if len(records) < size:
        raise DataError(
            f"web subset from {metadata!r}: only {len(records)} of the {size} requested images survived "
            f"({counts['tried']} tried; dropped: {dict(sorted(reasons.items()))}); raise `oversample` (now "
            f"{oversample}) in params.yaml and rerun: the shards already downloaded are kept"
        )
    manifest = {
        "source": "web-subset",
        "metadata": metadata,
        "metadata_files": [p.name for p in pool.files],
        "caption_field": pool.caption_column,
        "seed": seed,
        "size": size,
        "oversample": oversample,
        "download": {
            "tool": "img2dataset",
            "version": importlib.metadata.version("img2dataset"),
            **settings.fingerprint(),
        },
        "counts": counts,
        "skipped_metadata": candidates.skipped,
        "failures": dict(sorted(reasons.items())),
        "failure_messages": dict(
            sorted(messages.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_FAILURE_MESSAGES]
        ),
    }
    manifest = finish_layout(out, manifest, records)
    logger.info(
        "%s: kept %d of %d tried (%s)", out, len(records), len(results), dict(sorted(reasons.items()))
    )
    return WebSubsetResult(
        manifest, {sample_ids[rank]: outcome for rank, outcome in sorted(outcomes.items())}, shards_downloaded
    )
