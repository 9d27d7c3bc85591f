"""Output paths of a command: checked against its inputs and each other, and written atomically.

Every ``llava-more`` command that writes files calls ``check_outputs`` with its inputs and outputs
(by flag name) before it does any work. An output may not be, or resolve to, an input or another
output (through symlinks, ``..``, hard links, or names that differ only in case), nor be a folder
that holds an input or another output; any of these is an ``OutputPathError`` naming both flags and
paths. (A new file inside an input folder destroys nothing and is allowed; a command whose input
folder holds files it reads, like validation's image root, checks those files itself.)

Outputs are then written under a temporary name beside their final place and renamed into it
only when complete (``atomic_file``, ``write_bytes_atomic``, ``write_text_atomic``; ``atomic_dir``
for folders), so a failed run leaves the inputs and any earlier outputs as they were. A rename
replaces a link that is in the way instead of writing through it. A folder output replaces the
folder that was there only when that folder is empty or was written by llava-more (it holds the
``OUTPUT_MARKER`` file, or one of the caller's ``signature`` files): a folder of other files is
never deleted to make room.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from llava_more.errors import UserError

PathArg = str | os.PathLike | None
# One flag's value: a path, several paths (``--texts a.json b.json``), or None when not given.
PathArgs = PathArg | Iterable[PathArg]

# Hidden file that marks a folder written by ``atomic_dir`` (so a later run may replace it).
OUTPUT_MARKER = ".llava-more-output"

# Computed once: files made by ``tempfile`` are private (0600 / 0700) and get the usual mode instead.
_UMASK = os.umask(0)
os.umask(_UMASK)


class OutputPathError(UserError):
    """An output path that would overwrite an input or another output (or a folder of other files)."""


@dataclass(frozen=True)
class _Named:
    flag: str
    path: Path  # as given
    real: Path  # absolute, with symlinks and ``..`` resolved

    def __str__(self) -> str:
        shown = str(self.path)
        return f"{self.flag} {shown}" if str(self.real) == shown else f"{self.flag} {shown} (= {self.real})"


def _named(paths: Mapping[str, PathArgs]) -> list[_Named]:
    named = []
    for flag, value in paths.items():
        if value is None:
            continue
        values = [value] if isinstance(value, (str, os.PathLike)) else list(value)
        for item in values:
            if item is None or str(item) in ("", "-"):  # "-": standard output
                continue
            path = Path(item)
            named.append(_Named(flag, path, Path(os.path.abspath(path)).resolve()))
    return named


def _same(a: _Named, b: _Named) -> bool:
    if a.real == b.real or str(a.real).casefold() == str(b.real).casefold():
        return True
    try:
        return os.path.samefile(a.real, b.real)  # hard links; one file under two spellings
    except OSError:
        return False


def _inside(inner: _Named, outer: _Named) -> bool:
    """``inner`` lies in the folder ``outer`` (compared without case, as case-insensitive file systems do)."""
    outer_text = str(outer.real).casefold().rstrip(os.sep) + os.sep
    return str(inner.real).casefold().startswith(outer_text)


def check_outputs(inputs: Mapping[str, PathArgs], outputs: Mapping[str, PathArgs]) -> None:
    """Refuse outputs that are, resolve to or contain an input, or clash with another output.

    ``inputs`` and ``outputs`` map a flag name (``"--json"``) to its path(s); None values are skipped.
    """
    ins, outs = _named(inputs), _named(outputs)
    for out in outs:
        for given in ins:
            if _same(out, given):
                raise OutputPathError(
                    f"{out} is the input {given}: writing it would overwrite the input; write the output "
                    "somewhere else"
                )
            if _inside(given, out):
                raise OutputPathError(
                    f"{out} holds the input {given}: writing the output there would replace it; choose another "
                    "output folder"
                )
    for i, first in enumerate(outs):
        for second in outs[i + 1 :]:
            if _same(first, second):
                raise OutputPathError(
                    f"{first} and {second} are the same path: one output would overwrite the other; give each "
                    "output its own path"
                )
            for inner, outer in ((first, second), (second, first)):
                if _inside(inner, outer):
                    raise OutputPathError(
                        f"{inner} is inside the output folder {outer}; give each output its own place"
                    )


# ---------------------------------------------------------------------------------------------- files
@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; it becomes ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name[:200]}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, mode, encoding=None if "b" in mode else encoding) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: never a half-written file."""
    with atomic_file(path, "wb") as stream:
        stream.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``write_bytes_atomic`` for UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"))


# ---------------------------------------------------------------------------------------------- folders
def check_replaceable(path: str | os.PathLike, signature: str | tuple[str, ...] = ()) -> None:
    """``path`` may be replaced by a new output folder: absent, an empty folder, or one llava-more wrote.

    ``signature``: file names that mark an earlier output of the same kind (a dataset's ``manifest.json``),
    for folders written before ``OUTPUT_MARKER`` existed.
    """
    path = Path(path)
    if path.is_symlink() or not path.exists():
        return
    if not path.is_dir():
        raise OutputPathError(
            f"{path}: a file is in the way of the output folder; remove it or choose another path"
        )
    if path.resolve() in (Path.cwd().resolve(), *Path.cwd().resolve().parents, Path.home().resolve()):
        raise OutputPathError(f"{path}: the current, a parent or the home folder cannot be an output folder")
    entries = {entry.name for entry in path.iterdir()}
    marks = {OUTPUT_MARKER, *((signature,) if isinstance(signature, str) else signature)}
    if entries and not entries & marks:
        shown = ", ".join(sorted(entries)[:5]) + (", ..." if len(entries) > 5 else "")
        raise OutputPathError(
            f"{path}: the output folder already holds files llava-more did not write ({shown}); choose a new or "
            "empty folder, or remove it"
        )


def replace_dir(staging: Path, path: Path) -> None:
    """Move the complete folder ``staging`` to ``path``, replacing what was there (a folder or a link)."""
    previous = None
    if os.path.lexists(path):
        previous = Path(tempfile.mkdtemp(prefix=f".{path.name[:200]}.", suffix=".previous", dir=path.parent))
        os.replace(path, previous / "old")
    try:
        os.replace(staging, path)
    except BaseException:
        if previous is not None:
            os.replace(previous / "old", path)
        raise
    finally:
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)


@contextmanager
def atomic_dir(path: str | os.PathLike, signature: str | tuple[str, ...] = ()) -> Iterator[Path]:
    """An empty staging folder beside ``path``; when the block succeeds it becomes ``path``.

    An earlier output at ``path`` is replaced, but only if ``check_replaceable`` allows it (checked
    before the block runs, so a refusal costs no work). On failure the staging folder is removed
    and ``path`` is untouched. The new folder carries ``OUTPUT_MARKER``.
    """
    path = Path(path)
    check_replaceable(path, signature)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name[:200]}.", suffix=".partial", dir=path.parent))
    try:
        yield staging
        (staging / OUTPUT_MARKER).write_text("written by llava-more; a later run may replace this folder\n")
        os.chmod(staging, 0o777 & ~_UMASK)
        check_replaceable(path, signature)  # the block may have run for hours: look again
        replace_dir(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
