"""Safe, resumable extraction of zip and tar archives (``images.zip`` of LCS-558K, image tarballs).

Archives from the internet are untrusted: a member named ``../../.bashrc`` or ``/etc/passwd``, or a
link pointing outside the target, would write outside the dataset folder. Every member is checked
before anything is written, and such an archive is refused with a ``DataError`` naming it and the
member. Tar members also go through the standard library's ``data`` filter (no devices, no
absolute or escaping links, sane permissions).

Extraction is resumable: each file is written through a temporary name and renamed, so a file of
the right size is complete and is skipped on a rerun; a marker written last records a finished
extraction, and a rerun with the same archive returns at once.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from llava_more.errors import DataError

MARKER_PREFIX = ".extracted-"
_COPY_BUFFER = 1 << 20


@dataclass(frozen=True)
class ExtractionResult:
    target: Path
    files: int  # regular files in the archive
    written: int  # files written by this call (0 when the marker says it was done before)


def marker_path(archive: Path, target: Path) -> Path:
    return target / f"{MARKER_PREFIX}{archive.name}.json"


def _archive_identity(archive: Path) -> dict:
    """Name and size: enough to notice a different (re-downloaded, truncated) archive, cheap for 30 GB."""
    return {"archive": archive.name, "size": archive.stat().st_size}


def _inside(target: Path, member_name: str, archive: Path) -> Path:
    """Where ``member_name`` lands under ``target``; refuse names that leave it."""
    name = member_name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise DataError(
            f"{archive}: member {member_name!r} has an absolute path; refusing to extract an archive that "
            f"writes outside {target} (re-download it from the official source)"
        )
    normalized = posixpath.normpath(name)
    if normalized == ".." or normalized.startswith("../"):
        raise DataError(
            f"{archive}: member {member_name!r} points outside the target folder ({target}); refusing to "
            "extract it (re-download the archive from the official source)"
        )
    return target / normalized


def _check_link(target: Path, link_at: Path, link_to: str, member_name: str, archive: Path) -> None:
    """A link must resolve inside ``target`` (relative to where it sits, or archive-root relative for hardlinks)."""
    if link_to.startswith("/"):
        raise DataError(f"{archive}: member {member_name!r} links to the absolute path {link_to!r}; refusing it")
    resolved = posixpath.normpath(posixpath.join(link_at.parent.relative_to(target).as_posix(), link_to))
    if resolved == ".." or resolved.startswith("../"):
        raise DataError(
            f"{archive}: member {member_name!r} links to {link_to!r}, outside the target folder; refusing it"
        )


def _write_stream(source, destination: Path, size: int) -> bool:
    """Copy a member to ``destination`` via a temporary name; False when a complete copy is there."""
    if destination.is_file() and destination.stat().st_size == size:
        return False
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_name(f".{destination.name}.partial")
    with open(tmp, "wb") as out:
        shutil.copyfileobj(source, out, _COPY_BUFFER)
    os.replace(tmp, destination)
    return True


def _extract_zip(archive: Path, target: Path) -> tuple[int, int]:
    files = written = 0
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        plan = []
        for info in members:  # check everything before writing anything
            destination = _inside(target, info.filename, archive)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                _check_link(target, destination, zf.read(info).decode("utf-8", "replace"), info.filename, archive)
            plan.append((info, destination, mode))
        for info, destination, mode in plan:
            if info.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
            elif stat.S_ISLNK(mode):
                destination.parent.mkdir(parents=True, exist_ok=True)
                if not destination.is_symlink():
                    os.symlink(zf.read(info).decode("utf-8"), destination)
            else:
                files += 1
                with zf.open(info) as source:
                    written += _write_stream(source, destination, info.file_size)
    return files, written


def _extract_tar(archive: Path, target: Path) -> tuple[int, int]:
    files = written = 0
    with tarfile.open(archive, "r:*") as tf:
        members = tf.getmembers()
        for member in members:
            destination = _inside(target, member.name, archive)
            if member.issym():
                _check_link(target, destination, member.linkname, member.name, archive)
            elif member.islnk():
                try:
                    _inside(target, member.linkname, archive)
                except DataError:
                    raise DataError(
                        f"{archive}: member {member.name!r} is a hard link to {member.linkname!r}, outside the "
                        "target folder; refusing it"
                    ) from None
            try:
                tarfile.data_filter(member, str(target))
            except tarfile.FilterError as err:
                raise DataError(f"{archive}: member {member.name!r} is unsafe ({err}); refusing to extract it") from None
        for member in members:
            destination = target / posixpath.normpath(member.name)
            if member.isdir():
                destination.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                files += 1
                source = tf.extractfile(member)
                assert source is not None  # regular files always have data
                with source:
                    written += _write_stream(source, destination, member.size)
            elif member.issym() or member.islnk():
                if not destination.exists() and not destination.is_symlink():
                    tf.extract(member, target, filter="data")
    return files, written


def extract_archive(archive: str | Path, target: str | Path) -> ExtractionResult:
    """Extract a ``.zip`` or tar (``.tar``, ``.tar.gz``, ...) archive into ``target``, safely and resumably."""
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise DataError(f"{archive}: archive not found; download it first or fix the path")
    target.mkdir(parents=True, exist_ok=True)
    marker = marker_path(archive, target)
    identity = _archive_identity(archive)
    if marker.is_file():
        try:
            done = json.loads(marker.read_text())
        except json.JSONDecodeError:
            done = {}
        if {k: done.get(k) for k in identity} == identity:
            return ExtractionResult(target, int(done.get("files", 0)), 0)
    if zipfile.is_zipfile(archive):
        files, written = _extract_zip(archive, target)
    elif tarfile.is_tarfile(archive):
        files, written = _extract_tar(archive, target)
    else:
        raise DataError(f"{archive}: neither a zip nor a tar archive (truncated download?); download it again")
    marker.write_text(json.dumps({**identity, "files": files}, indent=1) + "\n")
    return ExtractionResult(target, files, written)
