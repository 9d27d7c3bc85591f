"""Downloading candidate images with img2dataset, resumably, and reading back what happened to each row.

img2dataset writes one folder (or ``.tar`` for webdataset) per shard, a parquet per shard with the
status and error of every row, and a ``<shard>_stats.json`` last; its ``incremental`` mode skips
shards whose stats exist. We add what it lacks for a candidate list that can change (a larger
oversampling factor extends it): a hash per shard of the rows it holds, kept beside the output,
so a shard whose rows changed is deleted and fetched again while unchanged shards are kept. When
every shard is done, img2dataset is not started at all (nothing is fetched twice).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import shutil
import signal
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from llava_more.errors import DataError

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = ("files", "webdataset")
SHARD_NAME_DIGITS = 5  # img2dataset's default oom_shard_count
STATE_FILE = "shards.json"
# Columns of img2dataset's per-shard parquet we read back (ours ride along as additional columns).
RESULT_COLUMNS = ["rank", "sample_id", "key", "status", "error_message"]


@dataclass(frozen=True)
class DownloadSettings:
    """How images are fetched and stored; any change of these invalidates the downloaded shards."""

    output_format: str = "files"
    image_size: int = 512  # shorter side, only for images larger than this (keep_ratio)
    resize_mode: str = "keep_ratio"
    encode_format: str = "jpg"
    shard_size: int = 10000
    processes: int = 4
    threads: int = 64
    timeout: int = 10
    retries: int = 0

    def check(self) -> None:
        if self.output_format not in OUTPUT_FORMATS:
            raise DataError(f"output format {self.output_format!r}: use one of {', '.join(OUTPUT_FORMATS)}")
        if self.shard_size < 1 or self.processes < 1 or self.threads < 1:
            raise DataError("shard size, processes and threads must be positive")

    def fingerprint(self) -> dict:
        # Parallelism and timeouts change how, not what, is stored.
        skip = {"processes", "threads", "timeout", "retries"}
        return {k: v for k, v in asdict(self).items() if k not in skip}


@dataclass(frozen=True)
class RowResult:
    """What img2dataset did with one candidate row."""

    rank: int
    sample_id: str
    shard: str
    key: str
    status: str  # success | failed_to_download | failed_to_resize
    error: str | None


def shard_name(shard: int) -> str:
    return f"{shard:0{SHARD_NAME_DIGITS}d}"


def _shard_hashes(candidates: pa.Table, shard_size: int) -> list[str]:
    ids = candidates.column("sample_id").to_pylist()
    urls = candidates.column("url").to_pylist()
    hashes = []
    for start in range(0, len(ids), shard_size):
        digest = hashlib.sha256()
        for sample_id, url in zip(
            ids[start : start + shard_size], urls[start : start + shard_size], strict=True
        ):
            digest.update(f"{sample_id}\t{url}\n".encode())
        hashes.append(digest.hexdigest())
    return hashes


def _remove_shard(folder: Path, shard: int) -> None:
    name = shard_name(shard)
    for path in (folder / f"{name}_stats.json", folder / f"{name}.parquet", folder / f"{name}.tar"):
        path.unlink(missing_ok=True)
    shutil.rmtree(folder / name, ignore_errors=True)


def _reconcile(folder: Path, state_path: Path, hashes: list[str], settings: DownloadSettings) -> None:
    """Delete the outputs of shards whose rows or settings changed since they were downloaded."""
    try:
        previous = json.loads(state_path.read_text()) if state_path.is_file() else None
    except json.JSONDecodeError:
        previous = None
    if previous is None or previous.get("settings") != settings.fingerprint():
        if folder.exists():
            logger.info("%s: settings changed or unknown; downloading every shard again", folder)
            shutil.rmtree(folder)
    else:
        old = previous.get("shards", [])
        for shard in range(max(len(old), len(hashes))):
            if shard >= len(hashes) or shard >= len(old) or old[shard] != hashes[shard]:
                _remove_shard(folder, shard)
    state_path.write_text(json.dumps({"settings": settings.fingerprint(), "shards": hashes}, indent=1) + "\n")


def missing_shards(folder: Path, shard_count: int) -> list[int]:
    return [s for s in range(shard_count) if not (folder / f"{shard_name(s)}_stats.json").is_file()]


def download_candidates(candidates_path: Path, folder: Path, settings: DownloadSettings) -> int:
    """Fetch the candidates' images into ``folder``; returns how many shards were (re)downloaded."""
    settings.check()
    candidates = pq.read_table(candidates_path, columns=["sample_id", "url"])
    hashes = _shard_hashes(candidates, settings.shard_size)
    _reconcile(folder, folder.parent / STATE_FILE, hashes, settings)
    todo = missing_shards(folder, len(hashes))
    if not todo:
        logger.info("%s: all %d shards already downloaded", folder, len(hashes))
        return 0
    logger.info("%s: downloading %d of %d shards with img2dataset", folder, len(todo), len(hashes))
    _run_img2dataset(candidates_path, folder, settings)
    still = missing_shards(folder, len(hashes))
    if still:
        raise DataError(
            f"{folder}: img2dataset finished without shards {', '.join(map(shard_name, still))}; see its log "
            "above, then rerun (finished shards are kept)"
        )
    return len(todo)


def _run_img2dataset(candidates_path: Path, folder: Path, settings: DownloadSettings) -> None:
    # img2dataset asks the network whether albumentations is up to date unless told not to.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from img2dataset import download

    folder.parent.mkdir(parents=True, exist_ok=True)
    sigint = signal.getsignal(signal.SIGINT)  # img2dataset installs its own (it exits 0 on Ctrl-C)
    # Its progress prints go to stderr: stdout is for the command's result.
    try:
        with contextlib.redirect_stdout(sys.stderr):
            download(
                url_list=str(candidates_path),
                input_format="parquet",
                url_col="url",
                caption_col="caption",
                save_additional_columns=["rank", "sample_id"],
                output_folder=str(folder),
                output_format=settings.output_format,
                image_size=settings.image_size,
                resize_mode=settings.resize_mode,
                resize_only_if_bigger=True,
                encode_format=settings.encode_format,
                number_sample_per_shard=settings.shard_size,
                processes_count=settings.processes,
                thread_count=settings.threads,
                timeout=settings.timeout,
                retries=settings.retries,
                incremental_mode="incremental",
                enable_wandb=False,
                extract_exif=False,
            )
    finally:
        signal.signal(signal.SIGINT, sigint)


def read_results(folder: Path, shard_count: int) -> list[RowResult]:
    """Every candidate row's outcome, in rank order, from img2dataset's per-shard parquet files."""
    results: list[RowResult] = []
    for shard in range(shard_count):
        name = shard_name(shard)
        path = folder / f"{name}.parquet"
        if not path.is_file():
            raise DataError(f"{path}: img2dataset's result for shard {name} is missing; rerun the download")
        table = pq.read_table(path, columns=RESULT_COLUMNS).to_pylist()
        results += [
            RowResult(int(r["rank"]), r["sample_id"], name, r["key"], r["status"], r["error_message"])
            for r in table
        ]
    results.sort(key=lambda r: r.rank)
    return results


def stored_images(
    folder: Path, rows: list[RowResult], settings: DownloadSettings
) -> Iterator[tuple[RowResult, bytes, Path | None]]:
    """``(row, image bytes, file or None)`` for each row, in the order given (rank order).

    With ``files`` the image's own file comes along (it can be hard-linked); with ``webdataset``
    one shard's wanted members are read at a time (shards hold consecutive ranks).
    """
    extension = settings.encode_format
    if settings.output_format == "files":
        for row in rows:
            path = folder / row.shard / f"{row.key}.{extension}"
            yield row, (path.read_bytes() if path.is_file() else b""), path
        return
    for shard, group in itertools.groupby(rows, key=lambda r: r.shard):
        members = {f"{row.key}.{extension}": row for row in group}
        found: dict[int, bytes] = {}
        with tarfile.open(folder / f"{shard}.tar") as tar:
            for member in tar:
                row = members.get(member.name)
                handle = tar.extractfile(member) if row is not None else None
                if row is not None and handle is not None:
                    found[row.rank] = handle.read()
        for row in members.values():
            yield row, found.get(row.rank, b""), None


def decodes(data: bytes) -> bool:
    """Whether the stored image loads as training will load it (``llava_more.data.images``): truncated
    files img2dataset kept, unsupported modes and decompression bombs do not."""
    from llava_more.data.images import ImageProblem, load_image_bytes

    try:
        load_image_bytes(data)
    except ImageProblem:
        return False
    return True
