"""Safe, resumable archive extraction: unsafe archives are refused before anything is written,
links become copies, clean archives extract once."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from llava_more.data.download.archive import extract_archive, marker_path
from llava_more.errors import DataError

FILES = {"00000/000000001.jpg": b"one", "00000/000000002.jpg": b"two" * 100, "00001/000001000.jpg": b"three"}


# ---------------------------------------------------------------------------------------------- builders
# A member is (kind, name, payload): kind "file" (payload: bytes), "dir", "sym" / "hard" (payload: the
# link target), "chr" / "blk" / "fifo" (devices). The same list builds a zip or a tar.
def _zip(path: Path, members: list[tuple[str, str, object]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for kind, name, payload in members:
            if kind == "file":
                zf.writestr(name, payload)
            elif kind == "dir":
                zf.writestr(name.rstrip("/") + "/", b"")
            elif kind == "sym":
                info = zipfile.ZipInfo(name)
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, str(payload))
            elif kind in ("chr", "blk", "fifo"):
                info = zipfile.ZipInfo(name)
                mode = {"chr": stat.S_IFCHR, "blk": stat.S_IFBLK, "fifo": stat.S_IFIFO}[kind]
                info.external_attr = (mode | 0o644) << 16
                zf.writestr(info, b"")
            else:
                raise ValueError(f"zip has no {kind} members")
    return path


def _tar(path: Path, members: list[tuple[str, str, object]]) -> Path:
    types = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
             "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}  # fmt: skip
    with tarfile.open(path, "w:gz") as tf:
        for kind, name, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
                continue
            info.type = types[kind]
            if kind in ("sym", "hard"):
                info.linkname = str(payload)
            tf.addfile(info)
    return path


def _archive(tmp_path: Path, kind: str, members: list[tuple[str, str, object]]) -> Path:
    return (
        _zip(tmp_path / "images.zip", members) if kind == "zip" else _tar(tmp_path / "images.tar.gz", members)
    )


def _clean() -> list[tuple[str, str, object]]:
    return [("file", name, data) for name, data in FILES.items()]


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def _snapshot(root: Path) -> dict[str, tuple[str, bytes | str]]:
    """Everything under ``root`` (links as links), to prove nothing appeared or changed anywhere."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_file():
                out[rel] = ("file", path.read_bytes())
            else:
                out[rel] = ("dir", "")
    return out


@pytest.fixture
def sandbox(tmp_path):
    """``tmp_path/box/target`` is where archives go; ``tmp_path/box/outside`` holds a victim file."""
    box = tmp_path / "box"
    (box / "outside").mkdir(parents=True)
    (box / "outside" / "victim.txt").write_bytes(b"precious")
    return box


def _refused(archive: Path, target: Path, box: Path, member: str | tuple[str, ...]) -> DataError:
    before = _snapshot(box)
    with pytest.raises(DataError) as err:
        extract_archive(archive, target)
    message = str(err.value)
    members = (member,) if isinstance(member, str) else member
    assert str(archive) in message and any(repr(m) in message for m in members), message
    assert "\n" not in message
    assert _snapshot(box) == before, "a refused archive wrote something"
    return err.value


# ---------------------------------------------------------------------------------------------- refused
ESCAPING_NAMES = ["../escape.jpg", "00000/../../escape.jpg", "/tmp/llava-more-escape.jpg", "..\\..\\escape.jpg",
                  "C:/escape.jpg", "ok/" + "x" * 300 + ".jpg"]  # fmt: skip


@pytest.mark.parametrize("kind", ["zip", "tar"])
@pytest.mark.parametrize(
    "evil", ESCAPING_NAMES, ids=["dotdot", "nested-dotdot", "absolute", "backslash", "drive", "long"]
)
def test_a_member_name_leaving_the_target_is_refused(tmp_path, sandbox, kind, evil):
    archive = _archive(tmp_path, kind, [*_clean(), ("file", evil, b"pwned")])
    _refused(archive, sandbox / "target", sandbox, evil)
    assert not Path("/tmp/llava-more-escape.jpg").exists()


# Each case: members after the clean ones, and the member the error must name. Every link is harmless
# when read alone (its text stays inside the target), so only following the whole chain shows the escape.
CHAINS = {
    # a -> . ; b -> a/a/.. reads as "a" but is the target's parent; then a file through b.
    "dot-chain-then-file": (
        [("sym", "a", "."), ("sym", "b", "a/a/.."), ("file", "b/escape.txt", b"pwned")],
        "b/escape.txt",
    ),
    "dot-chain-link": ([("sym", "b", "a/../a/../outside/victim.txt"), ("sym", "a", ".")], "b"),
    # the second link escapes on its own: the tar filter names it, our planner names the first
    "link-to-link-out": (
        [("sym", "00000/l1", "l2"), ("sym", "00000/l2", "../../outside/victim.txt")],
        ("00000/l1", "00000/l2"),
    ),
    "nested-dir-links": (
        [
            ("sym", "x", "d1/up/d1/up/../outside/victim.txt"),
            ("sym", "d1", "00000"),
            ("sym", "00000/up", ".."),
        ],
        "x",
    ),
    "loop": ([("sym", "a", "b"), ("sym", "b", "a")], "a"),
    "self-loop": ([("sym", "a", "a")], "a"),
    "link-to-folder": ([("sym", "alias", "00000")], "alias"),
    "dangling": ([("sym", "alias", "00000/missing.jpg")], "alias"),
    "absolute-link": ([("sym", "alias", "/etc/passwd")], "alias"),
    "file-under-link": ([("sym", "d", "00001"), ("file", "d/new.jpg", b"x")], "d/new.jpg"),
    "file-then-folder": ([("file", "a", b"file"), ("file", "a/b.jpg", b"under a file")], "a/b.jpg"),
    "folder-then-file": ([("dir", "a", None), ("file", "a", b"file")], "a"),
    "marker-name": (
        [("file", ".extracted-images.zip.json", b"{}"), ("file", ".extracted-images.tar.gz.json", b"{}")],
        ".extracted-images.zip.json",
    ),
}


@pytest.mark.parametrize("kind", ["zip", "tar"])
@pytest.mark.parametrize("case", sorted(CHAINS))
def test_links_are_followed_through_the_whole_archive_and_refused_when_unsafe(tmp_path, sandbox, kind, case):
    extra, member = CHAINS[case]
    archive = _archive(tmp_path, kind, [*_clean(), *extra])
    _refused(archive, sandbox / "target", sandbox, member)


@pytest.mark.parametrize(
    "extra, member",
    [
        ([("hard", "h", "../outside/victim.txt")], "h"),
        ([("hard", "h", "a/../a/../outside/victim.txt"), ("sym", "a", ".")], "h"),
        ([("sym", "s", "00000/../.."), ("hard", "h", "s/outside/victim.txt")], "s"),
        ([("hard", "h1", "h2"), ("hard", "h2", "h1")], "h1"),
        ([("chr", "dev/null", None)], "dev/null"),
        ([("blk", "dev/sda", None)], "dev/sda"),
        ([("fifo", "pipe", None)], "pipe"),
    ],
    ids=[
        "hard-out",
        "hard-through-dot-chain",
        "hard-through-escaping-link",
        "hard-loop",
        "chr",
        "blk",
        "fifo",
    ],
)
def test_tar_hard_links_and_devices_are_refused(tmp_path, sandbox, extra, member):
    archive = _tar(tmp_path / "images.tar.gz", [*_clean(), *extra])
    _refused(archive, sandbox / "target", sandbox, member)


@pytest.mark.parametrize("device", ["chr", "blk", "fifo"])
def test_zip_special_files_are_refused(tmp_path, sandbox, device):
    archive = _zip(tmp_path / "images.zip", [*_clean(), (device, "dev/thing", None)])
    _refused(archive, sandbox / "target", sandbox, "dev/thing")


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_a_link_already_in_the_target_is_never_written_through(tmp_path, sandbox, kind):
    target = sandbox / "target"
    target.mkdir()
    (target / "00000").symlink_to(sandbox / "outside", target_is_directory=True)
    archive = _archive(tmp_path, kind, _clean())
    # the tar data filter sees the link first (it resolves names on disk); zips meet our own check
    with pytest.raises(
        DataError, match="a link is in the way" if kind == "zip" else "outside the destination"
    ):
        extract_archive(archive, target)
    assert (sandbox / "outside" / "victim.txt").read_bytes() == b"precious"
    assert sorted(p.name for p in (sandbox / "outside").iterdir()) == ["victim.txt"]


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_a_link_in_place_of_a_file_is_never_written_through(tmp_path, sandbox, kind):
    target = sandbox / "target"
    (target / "00000").mkdir(parents=True)
    (target / "00000" / "000000001.jpg").symlink_to(sandbox / "outside" / "victim.txt")
    archive = _archive(tmp_path, kind, _clean())
    if kind == "tar":  # the data filter refuses a name that resolves outside through the link
        with pytest.raises(DataError, match="outside the destination"):
            extract_archive(archive, target)
    else:  # the link is replaced by the member, not followed
        extract_archive(archive, target)
        assert not (target / "00000" / "000000001.jpg").is_symlink()
        assert _tree(target) == FILES
    assert (sandbox / "outside" / "victim.txt").read_bytes() == b"precious"


def test_a_corrupt_zip_is_a_data_error(tmp_path, sandbox):
    archive = _zip(tmp_path / "images.zip", _clean())
    data = bytearray(archive.read_bytes())
    at = data.index(b"two" * 100)  # flip a byte of a stored member: its CRC no longer matches
    data[at] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt or truncated"):
        extract_archive(archive, sandbox / "target")


def test_a_truncated_tar_is_a_data_error(tmp_path, sandbox):
    archive = _tar(tmp_path / "images.tar.gz", _clean())
    archive.write_bytes(archive.read_bytes()[:-40])
    with pytest.raises(DataError):
        extract_archive(archive, sandbox / "target")


# ---------------------------------------------------------------------------------------------- extracted
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_links_inside_the_archive_become_copies_whatever_the_member_order(tmp_path, kind):
    links = [
        ("sym", "00000/alias.jpg", "000000001.jpg"),  # before or after its target, by the shuffle below
        ("sym", "top", "00001/000001000.jpg"),
        ("sym", "00001/deep.jpg", "../top"),  # up, then through a link at the top
        ("sym", "chain.jpg", "00000/alias.jpg"),  # a link to a link
        ("sym", "up.jpg", "00000/../00000/000000002.jpg"),
    ]
    if kind == "tar":
        links.append(("hard", "hard.jpg", "00000/000000002.jpg"))
    for order in (links + _clean(), _clean() + links[::-1]):
        target = tmp_path / f"out-{len(list(tmp_path.iterdir()))}"
        archive = _archive(tmp_path, kind, order)
        extract_archive(archive, target)
        expected = {**FILES, "00000/alias.jpg": b"one", "top": b"three", "00001/deep.jpg": b"three",
                    "chain.jpg": b"one", "up.jpg": b"two" * 100}  # fmt: skip
        if kind == "tar":
            expected["hard.jpg"] = b"two" * 100
        assert _tree(target) == expected
        assert not any(p.is_symlink() for p in target.rglob("*")), "the extracted tree holds a link"


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_clean_archive_extracts_and_a_rerun_is_a_no_op(tmp_path, kind):
    archive = _archive(tmp_path, kind, [*_clean(), ("sym", "00000/alias.jpg", "000000001.jpg")])
    target = tmp_path / "images"
    result = extract_archive(archive, target)
    assert _tree(target) == {**FILES, "00000/alias.jpg": b"one"}
    assert (result.files, result.written) == (len(FILES) + 1, len(FILES) + 1)
    assert marker_path(archive, target).is_file()

    mtimes = {p: p.stat().st_mtime_ns for p in target.rglob("*.jpg")}
    again = extract_archive(archive, target)
    assert (again.files, again.written) == (len(FILES) + 1, 0)
    assert {p: p.stat().st_mtime_ns for p in target.rglob("*.jpg")} == mtimes


def test_interrupted_extraction_resumes_with_the_missing_files_only(tmp_path):
    archive = _zip(tmp_path / "images.zip", _clean())
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
    assert [p.name for p in target.rglob("*.partial")] == []


def test_a_changed_archive_is_extracted_again(tmp_path):
    archive = _zip(tmp_path / "images.zip", _clean())
    target = tmp_path / "images"
    extract_archive(archive, target)
    _zip(archive, [*_clean(), ("file", "00002/000002000.jpg", b"new")])
    assert extract_archive(archive, target).written == 1
    assert (target / "00002/000002000.jpg").read_bytes() == b"new"


def test_not_an_archive_is_a_data_error(tmp_path):
    bogus = tmp_path / "images.zip"
    bogus.write_bytes(os.urandom(64))
    with pytest.raises(DataError, match="neither a zip nor a tar"):
        extract_archive(bogus, tmp_path / "out")
    with pytest.raises(DataError, match="not found"):
        extract_archive(tmp_path / "missing.zip", tmp_path / "out")


@pytest.mark.parametrize(
    "evil",
    [
        [("sym", "a", "."), ("sym", "b", "a/a/.."), ("file", "b/escape.txt", b"pwned")],
        [
            ("sym", "x", "d1/up/d1/up/../outside/victim.txt"),
            ("sym", "d1", "00000"),
            ("sym", "00000/up", ".."),
        ],
        [("file", "a", b"file"), ("file", "a/b.jpg", b"under a file")],
    ],
    ids=["chain-then-file", "nested-chain", "file-then-folder"],
)
def test_fetch_data_refuses_an_unsafe_prestaged_zip_on_one_line(tmp_path, capsys, evil):
    """The real command: a pre-staged LCS folder whose images.zip is unsafe fails with exit 2 and one line,
    and nothing is written anywhere (no extracted tree, no dataset folder, nothing outside)."""
    import json

    import yaml

    from llava_more.cli import main

    staged = tmp_path / "box" / "staged"
    staged.mkdir(parents=True)
    (tmp_path / "box" / "outside").mkdir()
    (tmp_path / "box" / "outside" / "victim.txt").write_bytes(b"precious")
    records = [{"id": str(i), "image": name, "conversations": []} for i, name in enumerate(FILES)]
    (staged / "blip_laion_cc_sbu_558k.json").write_text(json.dumps(records))
    _zip(staged / "images.zip", [*_clean(), *evil])
    settings = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    settings["pretrain_data"]["lcs"]["local_path"] = str(staged)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(settings, sort_keys=False))
    before = _snapshot(tmp_path / "box")
    out = tmp_path / "box" / "data" / "lcs" / "raw"
    code = main(
        ["fetch-data", "--params", str(params), "--name", "lcs", "--kind", "pretrain", "--out", str(out)]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err and "refusing to extract" in err
    # Only the empty parents of --out were made (where its staging folder would go).
    assert _snapshot(tmp_path / "box") == {**before, "data": ("dir", ""), "data/lcs": ("dir", "")}
