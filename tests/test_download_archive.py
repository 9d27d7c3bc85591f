"""Safe, resumable archive extraction: escaping members are refused, clean archives extract once."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from llava_more.data.download.archive import extract_archive, marker_path
from llava_more.errors import DataError

FILES = {"00000/000000001.jpg": b"one", "00000/000000002.jpg": b"two" * 100, "00001/000001000.jpg": b"three"}


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info in members:
            payload = (data or {}).get(info.name)
            if payload is not None:
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
            else:
                tf.addfile(info)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")}


@pytest.mark.parametrize("evil", ["../escape.jpg", "00000/../../escape.jpg", "/tmp/llava-more-escape.jpg"])
def test_zip_with_member_leaving_the_target_is_refused(tmp_path, evil):
    archive = _zip(tmp_path / "images.zip", {**FILES, evil: b"pwned"})
    target = tmp_path / "out" / "images"
    with pytest.raises(DataError) as err:
        extract_archive(archive, target)
    assert str(archive) in str(err.value) and evil in str(err.value)
    # Nothing was written: the check runs before the first file, and nothing landed outside.
    assert _tree(target) == {}
    assert not (tmp_path / "out" / "escape.jpg").exists() and not (tmp_path / "escape.jpg").exists()
    assert not Path("/tmp/llava-more-escape.jpg").exists()


@pytest.mark.parametrize(
    "evil",
    [
        _file("../escape.txt"),
        _file("/tmp/llava-more-escape.txt"),
        _link("images/up", "../../outside"),
        _link("images/abs", "/etc/passwd"),
        _link("images/hard", "../../etc/passwd", tarfile.LNKTYPE),
    ],
    ids=["dotdot", "absolute", "symlink-out", "symlink-absolute", "hardlink-out"],
)
def test_tar_with_member_or_link_leaving_the_target_is_refused(tmp_path, evil):
    clean = [_file(name) for name in FILES]
    archive = _tar(tmp_path / "images.tar.gz", [*clean, evil], {**FILES, evil.name: b"pwned"})
    with pytest.raises(DataError) as err:
        extract_archive(archive, tmp_path / "out")
    assert str(archive) in str(err.value) and evil.name in str(err.value)
    assert _tree(tmp_path / "out") == {}
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_clean_archive_extracts_and_a_rerun_is_a_no_op(tmp_path, kind):
    if kind == "zip":
        archive = _zip(tmp_path / "images.zip", FILES)
    else:
        archive = _tar(tmp_path / "images.tar.gz", [_file(n) for n in FILES] + [_link("00000/alias.jpg", "000000001.jpg")], FILES)
    target = tmp_path / "images"
    result = extract_archive(archive, target)
    assert _tree(target) == {**FILES, **({"00000/alias.jpg": b"one"} if kind == "tar" else {})}
    assert (result.files, result.written) == (len(FILES), len(FILES))
    assert marker_path(archive, target).is_file()

    mtimes = {p: p.stat().st_mtime_ns for p in target.rglob("*.jpg")}
    again = extract_archive(archive, target)
    assert (again.files, again.written) == (len(FILES), 0)
    assert {p: p.stat().st_mtime_ns for p in target.rglob("*.jpg")} == mtimes


def test_interrupted_extraction_resumes_with_the_missing_files_only(tmp_path):
    archive = _zip(tmp_path / "images.zip", FILES)
    target = tmp_path / "images"
    extract_archive(archive, target)
    # Simulate a crash: the marker was never written, one file never arrived, one is half-written.
    marker_path(archive, target).unlink()
    (target / "00001/000001000.jpg").unlink()
    (target / "00000/000000002.jpg").write_bytes(b"tw")
    kept = target / "00000/000000001.jpg"
    before = kept.stat().st_mtime_ns
    result = extract_archive(archive, target)
    assert result.written == 2
    assert _tree(target) == FILES
    assert kept.stat().st_mtime_ns == before


def test_a_changed_archive_is_extracted_again(tmp_path):
    archive = _zip(tmp_path / "images.zip", FILES)
    target = tmp_path / "images"
    extract_archive(archive, target)
    _zip(archive, {**FILES, "00002/000002000.jpg": b"new"})
    assert extract_archive(archive, target).written == 1
    assert (target / "00002/000002000.jpg").read_bytes() == b"new"


def test_not_an_archive_is_a_data_error(tmp_path):
    bogus = tmp_path / "images.zip"
    bogus.write_bytes(os.urandom(64))
    with pytest.raises(DataError, match="neither a zip nor a tar"):
        extract_archive(bogus, tmp_path / "out")
    with pytest.raises(DataError, match="not found"):
        extract_archive(tmp_path / "missing.zip", tmp_path / "out")
