"""Web-crawl metadata (parquet: an image URL and a caption per row) and the deterministic draw of a subset.

``metadata`` in ``params.yaml`` is one of:

- a local parquet file, a folder of them (searched recursively) or a glob (``meta/part-*.parquet``);
- a Hugging Face dataset id (``UCSC-VLAA/Recap-DataComp-1B``): all its parquet files;
- ``hf://datasets/<owner>/<name>/<glob>``: the parquet files of that dataset matching the glob, to
  draw from a part of a billion-row pool without downloading all of it.

The draw is a seeded stream of distinct row indices over the concatenated files (in sorted file
order). The stream does not depend on how many rows are asked for, so a larger oversampling factor
extends the candidate list instead of replacing it, and the same seed and files always give the
same candidates. Rows without an http(s) URL or without a caption are skipped (and counted).
"""

from __future__ import annotations

import glob
import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from llava_more.errors import DataError

HF_PREFIX = "hf://datasets/"
# Indices are drawn in blocks of this many; fixed so that the stream is the same whatever is asked.
DRAW_BLOCK = 4096
URL_COLUMN = "url"
# Other names the same caption goes by in LAION-style metadata.
CAPTION_ALIASES = {"caption": ("TEXT", "text"), "TEXT": ("caption",), "text": ("caption", "TEXT")}


@dataclass(frozen=True)
class MetadataPool:
    """The parquet files one subset is drawn from, and which columns hold the URL and the caption."""

    files: tuple[Path, ...]
    rows: tuple[int, ...]
    url_column: str
    caption_column: str

    @property
    def total_rows(self) -> int:
        return sum(self.rows)


@dataclass(frozen=True)
class Candidates:
    """The drawn rows in draw order (``rank``), and why skipped rows were skipped."""

    table: pa.Table  # columns: rank, sample_id, url, caption
    skipped: dict[str, int]
    drawn: int  # row indices looked at (candidates + skipped)


# --------------------------------------------------------------------------- locating the files


def _hub_parquet(repo_id: str, pattern: str, work_dir: Path, endpoint: str | None) -> list[Path]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    local = work_dir / "metadata" / repo_id.replace("/", "__")
    try:
        snapshot_download(
            repo_id, repo_type="dataset", allow_patterns=[pattern], local_dir=local, endpoint=endpoint
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as err:
        raise DataError(
            f"metadata {repo_id} is no local path, and downloading it ({pattern}) from the Hub failed ({err}); "
            f"check the path or the network, or "
            f"download the parquet files yourself and point `metadata` at them"
        ) from None
    return sorted(p for p in local.rglob("*.parquet") if ".cache" not in p.parts)


def locate_metadata(
    metadata: str, work_dir: Path, base_dir: Path = Path("."), endpoint: str | None = None
) -> list[Path]:
    """The parquet files named by ``metadata`` (see the module docstring), in sorted order."""
    if metadata.startswith(HF_PREFIX):
        parts = metadata[len(HF_PREFIX) :].split("/", 2)
        if len(parts) < 3 or not parts[2]:
            raise DataError(
                f"metadata {metadata!r}: expected hf://datasets/<owner>/<name>/<glob of parquet files>"
            )
        files = _hub_parquet(f"{parts[0]}/{parts[1]}", parts[2], work_dir, endpoint)
    else:
        local = Path(metadata) if Path(metadata).is_absolute() else base_dir / metadata
        if local.is_file():
            files = [local]
        elif local.is_dir():
            files = sorted(local.rglob("*.parquet"))
        elif glob.has_magic(str(local)):
            files = sorted(Path(p) for p in glob.glob(str(local), recursive=True))
        elif metadata.count("/") == 1 and not metadata.startswith("."):
            files = _hub_parquet(metadata, "*.parquet", work_dir, endpoint)
        else:
            raise DataError(
                f"metadata {metadata!r}: no such file or folder; give a parquet file, a folder or glob of them, "
                f"a Hugging Face dataset id, or hf://datasets/<owner>/<name>/<glob>"
            )
    if not files:
        raise DataError(f"metadata {metadata!r}: no parquet files found there")
    return files


def _pick_column(names: list[str], wanted: str, aliases: tuple[str, ...], path: Path, role: str) -> str:
    for candidate in (wanted, *aliases):
        if candidate in names:
            return candidate
    lowered = {n.lower(): n for n in names}
    for candidate in (wanted, *aliases):
        if candidate.lower() in lowered:
            return lowered[candidate.lower()]
    raise DataError(
        f"{path}: no {role} column {wanted!r} (columns: {', '.join(names)}); set caption_field in params.yaml "
        f"to the column that holds the {role}"
    )


def open_pool(files: list[Path], caption_field: str) -> MetadataPool:
    """Read only the parquet footers: row counts and column names (cheap, even for a billion rows)."""
    url_column = caption_column = None
    rows = []
    for path in files:
        try:
            parquet = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(f"{path}: not a readable parquet file ({err}); download it again") from None
        names = parquet.schema_arrow.names
        url = _pick_column(names, URL_COLUMN, (), path, "URL")
        caption = _pick_column(names, caption_field, CAPTION_ALIASES.get(caption_field, ()), path, "caption")
        if url_column is None:
            url_column, caption_column = url, caption
        elif (url, caption) != (url_column, caption_column):
            raise DataError(
                f"{path}: URL/caption columns are {url!r}/{caption!r}, but {files[0]} has "
                f"{url_column!r}/{caption_column!r}; the metadata files must share one schema"
            )
        rows.append(parquet.metadata.num_rows)
    assert url_column is not None and caption_column is not None
    return MetadataPool(tuple(files), tuple(rows), url_column, caption_column)


# --------------------------------------------------------------------------- the draw


def index_stream(seed: int, total: int) -> Iterator[int]:
    """Distinct row indices in ``range(total)`` in a seeded random order; stops once all were given."""
    rng = np.random.default_rng(seed)
    seen: set[int] = set()
    while len(seen) < total:
        for index in rng.integers(0, total, size=DRAW_BLOCK).tolist():
            if index not in seen:
                seen.add(index)
                yield index
                if len(seen) == total:
                    return


def _read_rows(pool: MetadataPool, indices: list[int]) -> dict[int, tuple[object, object]]:
    """``{global index: (url, caption)}``, reading only the row groups that hold the wanted rows."""
    offsets = np.cumsum((0,) + pool.rows)
    by_file: dict[int, list[int]] = {}
    for index in indices:
        file_number = int(np.searchsorted(offsets, index, side="right")) - 1
        by_file.setdefault(file_number, []).append(index)
    found: dict[int, tuple[object, object]] = {}
    for file_number, wanted in sorted(by_file.items()):
        parquet = pq.ParquetFile(pool.files[file_number])
        sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
        starts = np.cumsum([0] + sizes)
        by_group: dict[int, list[int]] = {}
        for index in wanted:
            row = index - int(offsets[file_number])
            by_group.setdefault(int(np.searchsorted(starts, row, side="right")) - 1, []).append(row)
        for group, rows in sorted(by_group.items()):  # one row group in memory at a time
            table = parquet.read_row_group(group, columns=[pool.url_column, pool.caption_column])
            taken = table.take(pa.array([row - int(starts[group]) for row in rows], type=pa.int64()))
            pairs = zip(rows, taken.column(0).to_pylist(), taken.column(1).to_pylist(), strict=True)
            for row, url, caption in pairs:
                found[row + int(offsets[file_number])] = (url, caption)
    return found


def _skip_reason(url: object, caption: object) -> str | None:
    if not isinstance(url, str) or not url.strip():
        return "no url"
    if not url.strip().lower().startswith(("http://", "https://")):
        return "not an http(s) url"
    if not isinstance(caption, str) or not caption.strip():
        return "no caption"
    return None


def draw_candidates(pool: MetadataPool, count: int, seed: int) -> Candidates:
    """The first ``count`` usable rows of the seeded stream (fewer only when the pool runs out)."""
    stream = index_stream(seed, pool.total_rows)
    ranks: list[int] = []
    sample_ids: list[str] = []
    urls: list[str] = []
    captions: list[str] = []
    skipped: Counter = Counter()
    drawn = 0
    width = max(9, len(str(pool.total_rows)))
    while len(urls) < count:
        batch = list(itertools.islice(stream, count - len(urls)))
        if not batch:
            break  # every row of the pool was looked at
        drawn += len(batch)
        rows = _read_rows(pool, batch)
        for index in batch:
            url, caption = rows[index]
            reason = _skip_reason(url, caption)
            if reason is not None:
                skipped[reason] += 1
                continue
            ranks.append(len(urls))
            sample_ids.append(f"{index:0{width}d}")
            urls.append(str(url).strip())
            captions.append(str(caption).strip())
    table = pa.table(
        {
            "rank": pa.array(ranks, type=pa.int64()),
            "sample_id": pa.array(sample_ids, type=pa.string()),
            "url": pa.array(urls, type=pa.string()),
            "caption": pa.array(captions, type=pa.string()),
        }
    )
    return Candidates(table=table, skipped=dict(sorted(skipped.items())), drawn=drawn)
