"""Validate a LLaVA dataset before training: quarantine bad records, keep the clean rest.

A record is fit for training when its conversation alternates ``human`` / ``gpt`` starting with
``human`` with no empty turn, ``<image>`` appears exactly once (in a human turn) if and only if the
record has an image, and that image lies inside the image root (no absolute path, no ``..`` or
symlink leading out) and loads through ``images.load_image``, the loader training, evaluation and
chat use. Records without an ``image`` key are text-only by design and are kept.

Every bad record goes to a quarantine JSON Lines file with where it was (index or line), its id,
a reason code and a readable detail, so a handful of broken files among 665K do not stop a run;
only when the bad fraction exceeds ``max_bad_fraction`` is the dataset rejected with a
``DataError``. The clean records are written, in their original order, to a LLaVA JSON array.

The outputs (quarantine, clean file, report) are checked against the inputs and each other
(``llava_more.outputs``), and against the images the records use, before anything is written,
and each is written under a temporary name and renamed. On a run rejected for too many bad records
only the quarantine (the evidence) is written.

Decoding is I/O- and codec-bound (Pillow's decoders release the GIL), so images are checked on a
thread pool.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llava_more.data.images import (
    BAD_IMAGE_FIELD,
    CORRUPT_IMAGE,
    EMPTY_IMAGE,
    IMAGE_OUTSIDE_ROOT,
    IMAGE_TOO_LARGE,
    MISSING_IMAGE,
    NOT_AN_IMAGE,
    UNSUPPORTED_IMAGE,
    ImageProblem,
    image_file,
    load_image,
    strict_decoding,
)
from llava_more.data.llava_json import RawRecord, iter_raw_records
from llava_more.errors import DataError
from llava_more.outputs import OutputPathError, atomic_file, check_outputs
from llava_more.text.control_tokens import records_spelling_control_tokens
from llava_more.text.templates import IMAGE_TOKEN

logger = logging.getLogger(__name__)

ROLES = ("human", "gpt")

# Reason codes written to the quarantine file.
BROKEN_JSON = "broken_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_ID = "missing_id"
BAD_CONVERSATIONS = "bad_conversations"
WRONG_ROLES = "wrong_roles"
EMPTY_TURN = "empty_turn"
IMAGE_TOKEN_COUNT = "image_token_count"
IMAGE_TOKEN_WITHOUT_IMAGE = "image_token_without_image"
# The image reason codes, defined by the loader (``images.py``) and re-exported here with the others.
IMAGE_REASONS = (BAD_IMAGE_FIELD, IMAGE_OUTSIDE_ROOT, MISSING_IMAGE, EMPTY_IMAGE, NOT_AN_IMAGE, CORRUPT_IMAGE,
                 UNSUPPORTED_IMAGE, IMAGE_TOO_LARGE)  # fmt: skip

# Records whose images are checked per batch handed to the thread pool (bounds memory on 665K).
_IMAGE_BATCH = 4096


@dataclass
class ValidationReport:
    json_path: str
    image_root: str
    total: int
    clean: int
    bad: int
    text_only: int
    bad_fraction: float
    max_bad_fraction: float
    reasons: dict[str, int] = field(default_factory=dict)
    quarantine_path: str = ""
    clean_path: str | None = None
    # Kept records whose text spells a chat template's control tokens (tokenized as text in training).
    control_token_text: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.reasons.items())) or "none"
        return (
            f"{self.json_path}: {self.clean} of {self.total} records clean ({self.text_only} text-only), "
            f"{self.bad} quarantined ({self.bad_fraction:.2%}; {reasons}) -> {self.quarantine_path}"
        )


@dataclass(frozen=True)
class Problem:
    reason: str
    detail: str


def default_clean_path(json_path: str | Path, quarantine_path: str | Path) -> Path:
    """``<quarantine dir>/<name>.clean.json``: beside the quarantine, never over the (maybe read-only) input."""
    return Path(quarantine_path).parent / f"{Path(json_path).stem}.clean.json"


def validate_dataset(
    json_path: str | Path,
    image_root: str | Path,
    quarantine_path: str | Path,
    max_bad_fraction: float,
    *,
    clean_path: str | Path | None = None,
    report_path: str | Path | None = None,
    workers: int | None = None,
) -> ValidationReport:
    """Check every record; write the quarantine, the clean file and the report; raise if too many are bad."""
    json_path, image_root, quarantine_path = Path(json_path), Path(image_root), Path(quarantine_path)
    clean_path = (
        Path(clean_path) if clean_path is not None else default_clean_path(json_path, quarantine_path)
    )
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise DataError(f"max_bad_fraction must be between 0 and 1, got {max_bad_fraction}")
    outputs = {"--quarantine": quarantine_path, "--clean-out": clean_path, "--report": report_path}
    check_outputs({"--json": json_path, "--image-root": image_root}, outputs)

    raw_records = list(iter_raw_records(json_path))
    if not raw_records:
        raise DataError(f"{json_path}: the dataset has no records")
    problems: list[Problem | None] = [_check_structure(raw) for raw in raw_records]

    with_images = [i for i, raw in enumerate(raw_records) if problems[i] is None and "image" in raw.record]
    if with_images and not image_root.is_dir():
        raise DataError(
            f"{image_root}: image root not found (needed by {len(with_images)} records of {json_path})"
        )
    guard = _OutputGuard(outputs)
    for index, problem in zip(
        with_images, _check_images(raw_records, with_images, image_root, workers, guard), strict=True
    ):
        problems[index] = problem

    quarantined = [(raw, p) for raw, p in zip(raw_records, problems, strict=True) if p is not None]
    clean = [raw.record for raw, p in zip(raw_records, problems, strict=True) if p is None]
    _write_quarantine(quarantine_path, json_path, quarantined)

    total, bad = len(raw_records), len(quarantined)
    report = ValidationReport(
        json_path=str(json_path),
        image_root=str(image_root),
        total=total,
        clean=len(clean),
        bad=bad,
        text_only=sum(1 for r in clean if "image" not in r),
        bad_fraction=bad / total,
        max_bad_fraction=max_bad_fraction,
        reasons=dict(sorted(Counter(p.reason for _, p in quarantined).items())),
        quarantine_path=str(quarantine_path),
        control_token_text=records_spelling_control_tokens(clean),
    )
    if report.control_token_text:
        logger.warning(
            "%s: %d records spell chat control tokens in their text (kept; they train as text): %s",
            json_path, len(report.control_token_text), dict(list(report.control_token_text.items())[:5]),
        )  # fmt: skip
    if report.bad_fraction > max_bad_fraction:
        raise DataError(
            f"{json_path}: {bad} of {total} records are bad ({report.bad_fraction:.2%}, more than the allowed "
            f"{max_bad_fraction:.2%}); each is listed with its reason in {quarantine_path}: fix the data, or raise "
            "--max-bad-fraction if losing them is acceptable"
        )
    _write_json_array(clean_path, clean)
    report.clean_path = str(clean_path)
    if report_path is not None:
        with atomic_file(report_path) as handle:
            handle.write(json.dumps(report.to_dict(), indent=1) + "\n")
    logger.info(report.summary())
    return report


# ---------------------------------------------------------------------------------------------
# Record structure
# ---------------------------------------------------------------------------------------------


def _check_structure(raw: RawRecord) -> Problem | None:
    if raw.error:
        return Problem(BROKEN_JSON, raw.error)
    record = raw.record
    if not isinstance(record, dict):
        return Problem(NOT_AN_OBJECT, f"a record must be a JSON object, got {type(record).__name__}")
    if record.get("id") in (None, ""):
        return Problem(MISSING_ID, "the record has no 'id'")
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        return Problem(BAD_CONVERSATIONS, "'conversations' must be a non-empty list of turns")
    for i, turn in enumerate(turns):
        if (
            not isinstance(turn, dict)
            or not isinstance(turn.get("from"), str)
            or not isinstance(turn.get("value"), str)
        ):
            return Problem(BAD_CONVERSATIONS, f"turn {i} must be an object with string 'from' and 'value'")
    for i, turn in enumerate(turns):
        expected = ROLES[i % 2]
        if turn["from"] != expected:
            return Problem(
                WRONG_ROLES,
                f"turn {i} is from {turn['from']!r}, expected {expected!r} (human/gpt alternate, human first)",
            )
    if len(turns) % 2:
        return Problem(WRONG_ROLES, "the conversation ends with a human turn that has no gpt reply")
    for i, turn in enumerate(turns):
        text = turn["value"].replace(IMAGE_TOKEN, "").strip()
        # A human turn of just "<image>\n" is the normal prompt of caption (stage-1) data.
        image_only_prompt = turn["from"] == "human" and IMAGE_TOKEN in turn["value"]
        if not text and not image_only_prompt:
            return Problem(EMPTY_TURN, f"turn {i} ({turn['from']}) is empty")
    return _check_image_token(record, turns)


def _check_image_token(record: dict, turns: list[dict]) -> Problem | None:
    counts = [turn["value"].count(IMAGE_TOKEN) for turn in turns]
    total = sum(counts)
    if "image" not in record:
        if total:
            return Problem(
                IMAGE_TOKEN_WITHOUT_IMAGE,
                f"{IMAGE_TOKEN} appears {total} time(s) but the record has no 'image'",
            )
        return None
    image = record["image"]
    if not isinstance(image, str) or not image.strip():
        return Problem(
            BAD_IMAGE_FIELD, f"'image' must be one relative path (a non-empty string), got {image!r}"
        )
    if total != 1:
        return Problem(
            IMAGE_TOKEN_COUNT, f"{IMAGE_TOKEN} appears {total} times; a record with an image needs exactly 1"
        )
    turn = counts.index(1)
    if turns[turn]["from"] != "human":
        return Problem(
            IMAGE_TOKEN_COUNT,
            f"{IMAGE_TOKEN} is in turn {turn} from {turns[turn]['from']!r}; it must be in a human turn",
        )
    return None


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


class _OutputGuard:
    """The files already at the output paths: none of them may be an image a record uses."""

    def __init__(self, outputs: dict[str, str | Path | None]):
        self.files = {}
        for flag, path in outputs.items():
            try:
                info = os.stat(path) if path is not None else None
            except OSError:
                continue
            if info is not None:
                self.files[(info.st_dev, info.st_ino)] = (flag, path)

    def check(self, path: Path) -> None:
        if not self.files:
            return
        try:
            info = path.stat()
        except OSError:
            return
        clash = self.files.get((info.st_dev, info.st_ino))
        if clash is not None:
            flag, output = clash
            raise OutputPathError(
                f"{flag} {output} is the image {path} of the dataset: writing it would overwrite an input; write "
                "the output somewhere else"
            )


def check_image(image_root: Path, relpath: str, guard: _OutputGuard | None = None) -> Problem | None:
    """None when the record's image lies inside ``image_root`` and loads as training will load it."""
    try:
        path = image_file(image_root, relpath)
        if guard is not None:
            guard.check(path)
        load_image(path)
    except ImageProblem as problem:
        where = problem.path if problem.reason != IMAGE_OUTSIDE_ROOT else f"{relpath!r}"
        return Problem(problem.reason, f"{where} {problem.detail}")
    return None


def _check_images(
    raw_records: list[RawRecord],
    indices: list[int],
    image_root: Path,
    workers: int | None,
    guard: _OutputGuard | None = None,
) -> Iterator[Problem | None]:
    workers = workers or min(32, (os.cpu_count() or 1) * 4)
    with strict_decoding(), ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(indices), _IMAGE_BATCH):
            batch = indices[start : start + _IMAGE_BATCH]
            relpaths = [raw_records[i].record["image"] for i in batch]
            yield from pool.map(lambda relpath: check_image(image_root, relpath, guard), relpaths)
            if len(indices) > _IMAGE_BATCH:
                logger.info("checked %d of %d images", min(start + _IMAGE_BATCH, len(indices)), len(indices))


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------


def _write_quarantine(path: Path, json_path: Path, quarantined: list[tuple[RawRecord, Problem]]) -> None:
    with atomic_file(path) as handle:
        for raw, problem in quarantined:
            entry = {
                "source": str(json_path),
                "where": raw.where,
                "id": raw.record.get("id") if isinstance(raw.record, dict) else None,
                "reason": problem.reason,
                "detail": problem.detail,
            }
            if raw.error:
                entry["raw"] = raw.raw
            else:
                entry["record"] = raw.record
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")


def _write_json_array(path: Path, records: list[dict]) -> None:
    with atomic_file(path) as handle:
        json.dump(records, handle, ensure_ascii=False)
