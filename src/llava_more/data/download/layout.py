"""The on-disk layout every fetched dataset ends in, shared with the demo sets.

``<out>/data.json`` (a LLaVA JSON list) + ``<out>/images/`` (the image root: ``image`` fields are
relative to it) + ``<out>/manifest.json`` (what was fetched, counts, sha256 of ``data.json``),
written last so that its presence means "complete". Manifests hold no timestamps or absolute
paths of the machine, so the same inputs give byte-identical files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from llava_more.data.demo_files import DATA_JSON, IMAGES_DIR, MANIFEST_JSON, dumps_json
from llava_more.errors import DataError
from llava_more.outputs import write_bytes_atomic

__all__ = [
    "DATA_JSON",
    "IMAGES_DIR",
    "MANIFEST_JSON",
    "caption_record",
    "file_sha256",
    "finish_layout",
    "link_or_copy",
    "link_path",
    "reset_outputs",
]

# The human turn of an alignment (stage-1) record: the image alone, as in LLaVA's "plain" format.
CAPTION_PROMPT = "<image>\n"


def caption_record(record_id: str, image: str, caption: str) -> dict:
    """One image-caption record in the layout of ``blip_laion_cc_sbu_558k.json``."""
    return {
        "id": record_id,
        "image": image,
        "conversations": [
            {"from": "human", "value": CAPTION_PROMPT},
            {"from": "gpt", "value": caption},
        ],
    }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def link_or_copy(source: Path, destination: Path) -> None:
    """Hard-link ``source`` to ``destination`` (no extra space); copy when linking is impossible."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.exists():
        destination.unlink()
    try:
        os.link(source, destination)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, destination)


def link_path(target: Path, link: Path) -> None:
    """Make ``link`` a symlink to ``target`` (pre-staged data stays where the user keeps it)."""
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        raise DataError(f"{link}: a folder is in the way of the link to {target}; remove it and rerun")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target.resolve(), target_is_directory=target.is_dir())


def finish_layout(out_dir: Path, manifest: dict, records: list[dict] | None = None) -> dict:
    """Write ``data.json`` (unless it is already in place) and then ``manifest.json``; return the manifest."""
    json_path = out_dir / DATA_JSON
    if records is not None:
        write_bytes_atomic(json_path, dumps_json(records))
    manifest = {
        **manifest,
        "data_json": DATA_JSON,
        "image_root": IMAGES_DIR,
        "data_json_sha256": file_sha256(json_path),
    }
    write_bytes_atomic(out_dir / MANIFEST_JSON, dumps_json(manifest))
    return manifest


def reset_outputs(out_dir: Path) -> None:
    """Remove a previous result's ``data.json`` / ``manifest.json`` so a failed rerun leaves no stale one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (MANIFEST_JSON, DATA_JSON):
        path = out_dir / name
        if path.is_symlink() or path.exists():
            path.unlink()
