"""Reading LLaVA-format datasets: a JSON array (``.json``) or JSON Lines (``.jsonl``) beside an image root.

A record is ``{"id", "image"?, "conversations": [{"from": "human"|"gpt", "value"}, ...]}``; the
``image`` path is relative to the image root, and a record without one is text-only. This module
reads records and images (through ``images.py``, the one place images are decoded) and turns
every unreadable input into a ``DataError`` naming the file and the record; ``validate.py`` decides
which records are fit for training.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from llava_more.data.images import ImageProblem, image_file, load_image
from llava_more.errors import DataError

JSON_SUFFIXES = (".json", ".jsonl")
_HINT = "fix or remove it, or run `llava-more validate-data` to quarantine bad records"


@dataclass(frozen=True)
class RawRecord:
    """One entry of a dataset file as read, before any check.

    ``where`` says how to find it in the file (``"index 12"`` in a JSON array, ``"line 13"`` in
    JSON Lines); ``error`` is set, and ``record`` is None, when a JSON line does not parse.
    """

    position: int  # 0-based index in a .json array, 1-based line number in a .jsonl file
    where: str
    record: Any
    error: str | None = None
    raw: str | None = None


def _check_suffix(path: Path) -> None:
    if path.suffix not in JSON_SUFFIXES:
        raise DataError(f"{path}: expected a LLaVA .json array or a .jsonl file, got suffix {path.suffix!r}")


def iter_raw_records(json_path: str | Path) -> Iterator[RawRecord]:
    """Every entry of the file in order; broken JSON lines come back with ``error`` set.

    A ``.json`` file that does not parse, or is not an array, raises ``DataError`` (it cannot be
    read record by record).
    """
    path = Path(json_path)
    _check_suffix(path)
    if not path.is_file():
        raise DataError(
            f"{path}: dataset file not found; check the path (or generate/download the data first)"
        )
    if path.suffix == ".jsonl":
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue  # blank lines (e.g. a trailing newline) are not records
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield RawRecord(
                        line_no,
                        f"line {line_no}",
                        None,
                        f"broken JSON: {exc.msg} at column {exc.colno}",
                        line.rstrip("\n"),
                    )
                else:
                    yield RawRecord(line_no, f"line {line_no}", record)
        return
    try:
        with path.open("r", encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "fix the file, or convert it to .jsonl so broken records can be quarantined one by one"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); re-save it as UTF-8"
        ) from None
    if not isinstance(data, list):
        raise DataError(
            f"{path}: a LLaVA .json dataset must be a JSON array of records, got {type(data).__name__}"
        )
    for index, record in enumerate(data):
        yield RawRecord(index, f"index {index}", record)


def read_records(json_path: str | Path) -> list[dict]:
    """All records of a ``.json`` / ``.jsonl`` file; a broken JSON line raises ``DataError``."""
    records = []
    for raw in iter_raw_records(json_path):
        if raw.error:
            raise DataError(f"{json_path}: {raw.where}: {raw.error}; {_HINT}")
        if not isinstance(raw.record, dict):
            raise DataError(f"{json_path}: {raw.where}: a record must be a JSON object; {_HINT}")
        records.append(raw.record)
    return records


def image_path(image_root: str | Path, record: dict) -> Path | None:
    """Where a record's image lies, or None for a text-only record; a path leaving the root is a ``DataError``."""
    image = record.get("image")
    if image is None:
        return None
    try:
        return image_file(image_root, image)
    except ImageProblem as problem:
        raise problem.about(image, f"image of record {record.get('id')!r}", _HINT) from None


def open_image(path: str | Path, record_id: object = None) -> Image.Image:
    """Open and fully decode an image as the RGB picture a viewer shows (``llava_more.data.images``).

    Any failure is a ``DataError`` naming the file and the record.
    """
    about = f"record {record_id!r}" if record_id is not None else "a record"
    return load_image(path, subject=f"image of {about}", hint=_HINT)


class LlavaJsonDataset(Dataset):
    """A LLaVA JSON / JSON Lines file as a torch ``Dataset``.

    Items are ``{"id", "image": PIL RGB image | None, "conversations"}``; images are decoded when an
    item is read. Records are read once, strictly (run ``validate_dataset`` first on untrusted data).
    """

    def __init__(self, json_path: str | Path, image_root: str | Path):
        self.json_path = Path(json_path)
        self.image_root = Path(image_root)
        self.records = read_records(self.json_path)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        path = image_path(self.image_root, record)
        return {
            "id": record.get("id"),
            "image": None if path is None else open_image(path, record.get("id")),
            "conversations": record["conversations"],
        }

    def has_image(self, index: int) -> bool:
        return self.records[index].get("image") is not None

    def modality_lengths(self) -> list[int]:
        """Word counts per record, negative for text-only ones (LLaVA's length-grouping key)."""
        lengths = []
        for record in self.records:
            words = sum(len(turn["value"].split()) for turn in record["conversations"])
            lengths.append(words if record.get("image") is not None else -words)
        return lengths
