"""On-disk layout shared by the demo datasets: ``data.json`` + ``images/`` + ``manifest.json``.

The layout is that of the real LLaVA sets: ``data.json`` is a LLaVA JSON list whose ``image``
fields are relative to the image root ``<out>/images`` (like ``blip_laion_cc_sbu_558k.json`` next
to its extracted ``images.zip``). ``manifest.json`` records what was generated (seed, counts, the
sha256 of ``data.json`` and of the images), so a run can be audited and reproduced; it holds no
timestamps so that the same seed gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from llava_more.outputs import atomic_dir, write_bytes_atomic

DATA_JSON = "data.json"
IMAGES_DIR = "images"
MANIFEST_JSON = "manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class DemoDataset:
    """Where a generated demo dataset lies: what training and validation take as inputs."""

    out_dir: Path
    json_path: Path
    image_root: Path
    manifest: dict


def record_rng(purpose: str, seed: int, index: int) -> random.Random:
    """An RNG private to one record: records do not shift when another one's draws change.

    A ``str`` seed is hashed with SHA-512 by ``random``, so this is stable across processes
    (unlike ``hash()``, which is salted).
    """
    return random.Random(f"llava-more/{purpose}/{seed}/{index}")


def image_relpath(index: int) -> str:
    """``00001/000001234.png``: a thousand files per folder, as in LCS-558K."""
    return f"{index // 1000:05d}/{index:09d}.png"


def prepare_out_dir(out_dir: Path) -> Path:
    """Create ``out_dir`` and an empty ``images/`` in it (stale images from an earlier run go)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images = out_dir / IMAGES_DIR
    if images.exists():
        shutil.rmtree(images)
    images.mkdir()
    for name in (DATA_JSON, MANIFEST_JSON):
        (out_dir / name).unlink(missing_ok=True)
    return images


def save_png(image: Image.Image, images_dir: Path, relpath: str) -> None:
    path = images_dir / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")


def dumps_json(obj: object) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, indent=1) + "\n").encode("utf-8")


def images_sha256(images_dir: Path) -> str:
    """One hash over every image file (relative path and content), in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in images_dir.rglob("*") if p.is_file()):
        digest.update(path.relative_to(images_dir).as_posix().encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def write_dataset(out_dir: str | Path, write: Callable[[Path], DemoDataset]) -> DemoDataset:
    """Run ``write`` on a staging folder that becomes ``out_dir`` only once the dataset is complete.

    A failed run leaves an earlier dataset at ``out_dir`` as it was (``llava_more.outputs.atomic_dir``).
    """
    out = Path(out_dir)
    with atomic_dir(out, signature=(MANIFEST_JSON, DATA_JSON)) as staging:
        staged = write(staging)
    return DemoDataset(out, out / DATA_JSON, out / IMAGES_DIR, staged.manifest)


def finish_dataset(out_dir: Path, records: list[dict], manifest: dict) -> DemoDataset:
    """Write ``data.json`` then ``manifest.json`` (last, so its presence means "complete")."""
    data = dumps_json(records)
    write_bytes_atomic(out_dir / DATA_JSON, data)
    manifest = {
        "format_version": FORMAT_VERSION,
        **manifest,
        "data_json": DATA_JSON,
        "image_root": IMAGES_DIR,
        "data_json_sha256": hashlib.sha256(data).hexdigest(),
        "images_sha256": images_sha256(out_dir / IMAGES_DIR),
    }
    write_bytes_atomic(out_dir / MANIFEST_JSON, dumps_json(manifest))
    return DemoDataset(out_dir, out_dir / DATA_JSON, out_dir / IMAGES_DIR, manifest)


def exact_split(n: int, fractions: dict[str, float], rng: random.Random) -> list[str]:
    """``n`` labels in exactly the given proportions (rounding goes to the first labels), shuffled."""
    counts = {label: int(n * fraction) for label, fraction in fractions.items()}
    shortfall = n - sum(counts.values())
    for label in list(counts)[:shortfall]:
        counts[label] += 1
    labels = [label for label, count in counts.items() for _ in range(count)]
    rng.shuffle(labels)
    return labels
