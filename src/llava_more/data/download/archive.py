"""Safe, resumable extraction of zip and tar archives (``images.zip`` of LCS-558K, image tarballs).

Archives from the internet are untrusted. Extraction is planned in full before anything is
written, and an archive with any unsafe member is refused with a ``DataError`` naming the archive,
the member and the fix; nothing is written then. Refused: absolute names and names that climb out
with ``..``, links (symbolic or hard) whose target, followed through every link of the archive as
the file system would follow it, leaves the target, loops, dangles or is a folder, members that lie
under a link, a file and a folder at the same path, devices, FIFOs and other special files, names
with NUL bytes or over-long components, and target folders already holding a link or a file where a
folder is needed. Tar members also pass the standard library's ``data`` extraction filter.

Links are neutralised rather than recreated: a link member becomes a regular file holding a copy
of what it points at, so the extracted tree holds only folders and regular files and no later
member can be written through a link the archive created.

Extraction is resumable: each file is written through a temporary name and renamed, so a regular
file of the right size is complete and is skipped on a rerun; a marker written last records a
finished extraction, and a rerun with the same archive returns at once.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from llava_more.errors import DataError

MARKER_PREFIX = ".extracted-"
_COPY_BUFFER = 1 << 20
# As the kernel's ELOOP limit: more links than this in one lookup is a loop.
_MAX_LINK_HOPS = 40
_MAX_NAME_BYTES = 255
_FIX = "re-download the archive from the official source"

FILE, FOLDER, SYMLINK, HARDLINK = "file", "folder", "symlink", "hardlink"


@dataclass(frozen=True)
class ExtractionResult:
    target: Path
    files: int  # regular files in the extracted tree (link members count: they become files)
    written: int  # files written by this call (0 when the marker says it was done before)


@dataclass(frozen=True)
class _Member:
    """One archive member, its name normalised to a relative POSIX path under the target."""

    kind: str
    name: str
    raw_name: str
    size: int
    link: str | None  # SYMLINK: the text of the link; HARDLINK: the archive path it names
    source: Any  # the ZipInfo / TarInfo to read a FILE's data from


def marker_path(archive: Path, target: Path) -> Path:
    return target / f"{MARKER_PREFIX}{archive.name}.json"


def _archive_identity(archive: Path) -> dict:
    """Name and size: enough to notice a different (re-downloaded, truncated) archive, cheap for 30 GB."""
    return {"archive": archive.name, "size": archive.stat().st_size}


def _refuse(archive: Path, raw_name: str, why: str) -> DataError:
    return DataError(f"{archive}: member {raw_name!r} {why}; refusing to extract the archive ({_FIX})")


def _split_path(text: str) -> list[str]:
    """Path components, with a backslash read as a separator too (zips made on Windows use it)."""
    return text.replace("\\", "/").split("/")


def _is_absolute(text: str) -> bool:
    text = text.replace("\\", "/")
    return text.startswith("/") or (len(text) > 1 and text[1] == ":")


def _normalise(raw_name: str, archive: Path) -> str:
    """``raw_name`` as a relative path under the target ("" for the target itself); refuse names that leave it."""
    if "\x00" in raw_name:
        raise _refuse(archive, raw_name, "has a NUL byte in its name")
    if _is_absolute(raw_name):
        raise _refuse(archive, raw_name, "has an absolute path, which would write outside the target folder")
    parts: list[str] = []
    for part in _split_path(raw_name):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise _refuse(archive, raw_name, "points outside the target folder")
            parts.pop()
            continue
        if len(part.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES:
            raise _refuse(archive, raw_name, f"has a name component longer than {_MAX_NAME_BYTES} bytes")
        parts.append(part)
    return "/".join(parts)


# ---------------------------------------------------------------------------------------------- reading
def _zip_members(zf: zipfile.ZipFile, archive: Path) -> list[_Member]:
    members = []
    for info in zf.infolist():
        mode = info.external_attr >> 16
        name = _normalise(info.filename, archive)
        if info.is_dir() or stat.S_ISDIR(mode):
            members.append(_Member(FOLDER, name, info.filename, 0, None, info))
        elif stat.S_ISLNK(mode):
            try:
                link = zf.read(info).decode("utf-8")
            except UnicodeDecodeError:
                raise _refuse(archive, info.filename, "is a link whose target is not UTF-8 text") from None
            members.append(_Member(SYMLINK, name, info.filename, 0, link, info))
        elif stat.S_IFMT(mode) in (0, stat.S_IFREG):
            members.append(_Member(FILE, name, info.filename, info.file_size, None, info))
        else:
            raise _refuse(archive, info.filename, "is a device, FIFO or other special file")
    return members


def _tar_members(tf: tarfile.TarFile, archive: Path, target: Path) -> list[_Member]:
    members = []
    for info in tf.getmembers():
        name = _normalise(info.name, archive)
        try:
            tarfile.data_filter(info, str(target))
        except tarfile.FilterError as err:
            raise _refuse(archive, info.name, f"is unsafe ({err})") from None
        if info.isdir():
            members.append(_Member(FOLDER, name, info.name, 0, None, info))
        elif info.issym():
            members.append(_Member(SYMLINK, name, info.name, 0, info.linkname, info))
        elif info.islnk():
            members.append(_Member(HARDLINK, name, info.name, 0, info.linkname, info))
        elif info.isreg():
            members.append(_Member(FILE, name, info.name, info.size, None, info))
        else:  # the data filter refuses devices and FIFOs; anything else is no file either
            raise _refuse(archive, info.name, "is a device, FIFO or other special file")
    return members


# ---------------------------------------------------------------------------------------------- planning
@dataclass
class _Plan:
    folders: list[str]
    files: list[_Member]  # written from the archive's data
    copies: list[tuple[_Member, str]]  # link members: (member, path of the regular file it resolves to)


def _final_tree(members: list[_Member], archive: Path) -> dict[str, _Member]:
    """What each path holds once every member is in place (a later member replaces an earlier one)."""
    tree: dict[str, _Member] = {}
    for member in members:
        if not member.name:
            if member.kind != FOLDER:
                raise _refuse(archive, member.raw_name, "names the target folder itself")
            continue
        if member.name.startswith(MARKER_PREFIX):
            raise _refuse(archive, member.raw_name, "has the name of the extractor's completion marker")
        earlier = tree.get(member.name)
        if earlier is not None and (earlier.kind == FOLDER) != (member.kind == FOLDER):
            raise _refuse(
                archive, member.raw_name, f"is both a folder and a file (also as {earlier.raw_name!r})"
            )
        tree[member.name] = member
    for member in tree.values():
        parts = member.name.split("/")
        for depth in range(1, len(parts)):
            above = tree.get("/".join(parts[:depth]))
            if above is None or above.kind == FOLDER:
                continue
            if above.kind == FILE:
                why = f"needs {above.name!r} to be a folder, but the archive also has a file there"
            else:
                why = f"lies under the link {above.raw_name!r}; members may not be placed through links"
            raise _refuse(archive, member.raw_name, why)
    return tree


def _resolve_link(member: _Member, tree: dict[str, _Member], folders: set[str], archive: Path) -> str:
    """The regular file ``member`` (a link) ends at, following every link of the archive on the way.

    Links are followed the way the file system would, component by component, with ``..`` taken
    after the link before it; the walk never leaves the target and never reads the disk.
    """
    assert member.link is not None
    hops = 0

    def refuse(why: str) -> DataError:
        return _refuse(archive, member.raw_name, f"links to {member.link!r}, {why}")

    def walk(start: list[str], link_text: str) -> list[str]:
        nonlocal hops
        if "\x00" in link_text or not link_text:
            raise refuse("which is not a valid link target")
        if _is_absolute(link_text):
            raise refuse("an absolute path outside the target folder")
        resolved = list(start)
        pending = _split_path(link_text)
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not resolved:
                    raise refuse("which leaves the target folder")
                resolved.pop()
                continue
            resolved.append(part)
            entry = tree.get("/".join(resolved))
            if entry is not None and entry.kind in (SYMLINK, HARDLINK):
                hops += 1
                if hops > _MAX_LINK_HOPS:
                    raise refuse("a chain of links that loops or is too long")
                resolved.pop()
                if entry.kind == SYMLINK:
                    resolved = walk(resolved, entry.link or "")
                else:  # a hard link names its target from the archive's root
                    resolved = walk([], entry.link or "")
        return resolved

    start = member.name.split("/")[:-1] if member.kind == SYMLINK else []
    resolved = "/".join(walk(start, member.link))
    if resolved == "" or resolved in folders:
        raise refuse("a folder (only links to files are extracted, as copies)")
    entry = tree.get(resolved)
    if entry is None:
        raise refuse("which is not in the archive (a dangling link)")
    return resolved


def _check_disk(plan: _Plan, target: Path, archive: Path) -> None:
    """What is already in the target must not redirect a write: no links where folders go, no files either."""
    for folder in plan.folders:
        path = target / folder
        if path.is_symlink():
            raise DataError(
                f"{path}: a link is in the way of a folder of {archive}; refusing to extract through it "
                f"(remove {path}, or extract into an empty folder)"
            )
        if path.exists() and not path.is_dir():
            raise DataError(
                f"{path}: a file is in the way of a folder of {archive} (remove it, or extract into an empty folder)"
            )
    for member in [*plan.files, *(m for m, _ in plan.copies)]:
        path = target / member.name
        if path.is_dir() and not path.is_symlink():
            raise DataError(
                f"{path}: a folder is in the way of the file {member.raw_name!r} of {archive} (remove it, or "
                "extract into an empty folder)"
            )


def _plan(members: list[_Member], target: Path, archive: Path) -> _Plan:
    tree = _final_tree(members, archive)
    folders: set[str] = set()
    for name, member in tree.items():
        parts = name.split("/")
        folders.update("/".join(parts[:depth]) for depth in range(1, len(parts)))
        if member.kind == FOLDER:
            folders.add(name)
    plan = _Plan(sorted(folders, key=lambda f: (f.count("/"), f)), [], [])
    for member in tree.values():
        if member.kind == FILE:
            plan.files.append(member)
        elif member.kind in (SYMLINK, HARDLINK):
            plan.copies.append((member, _resolve_link(member, tree, folders, archive)))
    _check_disk(plan, target, archive)
    return plan


# ---------------------------------------------------------------------------------------------- writing
def _complete(destination: Path, size: int) -> bool:
    """A regular file (not a link) of the expected size: written by an earlier run."""
    try:
        info = destination.lstat()
    except FileNotFoundError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size == size


def _write_stream(source: IO[bytes], destination: Path) -> None:
    """Copy to ``destination`` via a fresh temporary name (no member can have it) and rename.

    ``os.replace`` replaces a link that is in the way; it never writes through it.
    """
    handle, tmp = tempfile.mkstemp(
        prefix=f".{destination.name[:200]}.", suffix=".partial", dir=destination.parent
    )
    try:
        with os.fdopen(handle, "wb") as out:
            shutil.copyfileobj(source, out, _COPY_BUFFER)
        os.replace(tmp, destination)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write(plan: _Plan, target: Path, open_member) -> int:
    written = 0
    target.mkdir(parents=True, exist_ok=True)
    for folder in plan.folders:
        (target / folder).mkdir(exist_ok=True)
    for member in plan.files:
        destination = target / member.name
        if not _complete(destination, member.size):
            with open_member(member) as source:
                _write_stream(source, destination)
            written += 1
    for member, resolved in plan.copies:
        destination, origin = target / member.name, target / resolved
        if not _complete(destination, origin.stat().st_size):
            with open(origin, "rb") as source:
                _write_stream(source, destination)
            written += 1
    return written


def _extract_zip(archive: Path, target: Path) -> tuple[int, int]:
    with zipfile.ZipFile(archive) as zf:
        plan = _plan(_zip_members(zf, archive), target, archive)
        written = _write(plan, target, lambda member: zf.open(member.source))
    return len(plan.files) + len(plan.copies), written


def _extract_tar(archive: Path, target: Path) -> tuple[int, int]:
    with tarfile.open(archive, "r:*") as tf:
        plan = _plan(_tar_members(tf, archive, target), target, archive)

        def open_member(member: _Member) -> IO[bytes]:
            handle = tf.extractfile(member.source)
            assert handle is not None  # regular files always have data
            return handle

        written = _write(plan, target, open_member)
    return len(plan.files) + len(plan.copies), written


def extract_archive(archive: str | Path, target: str | Path) -> ExtractionResult:
    """Extract a ``.zip`` or tar (``.tar``, ``.tar.gz``, ...) archive into ``target``, safely and resumably."""
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise DataError(f"{archive}: archive not found; download it first or fix the path")
    marker = marker_path(archive, target)
    identity = _archive_identity(archive)
    if marker.is_file():
        try:
            done = json.loads(marker.read_text())
        except json.JSONDecodeError:
            done = {}
        if {k: done.get(k) for k in identity} == identity:
            return ExtractionResult(target, int(done.get("files", 0)), 0)
    try:
        if zipfile.is_zipfile(archive):
            files, written = _extract_zip(archive, target)
        elif tarfile.is_tarfile(archive):
            files, written = _extract_tar(archive, target)
        else:
            raise DataError(
                f"{archive}: neither a zip nor a tar archive (truncated download?); download it again"
            )
    except (zipfile.BadZipFile, tarfile.ReadError, zlib.error, EOFError) as err:
        raise DataError(f"{archive}: the archive is corrupt or truncated ({err}); {_FIX}") from None
    marker.write_text(json.dumps({**identity, "files": files}, indent=1) + "\n")
    return ExtractionResult(target, files, written)
