"""A balanced mix of finished pre-training sets (LAION + Recap-DataComp, the paper's fourth data setting).

The mix has the requested total and takes an equal share from each part (the remainder, if the
total does not divide, goes to the first parts in ``parts`` order). Which records of a part are
taken, and the order of the result, follow from the seed alone. Records keep their captions;
ids and image paths are prefixed with the part's name, so parts never collide, and images are
hard-linked from the parts (no copy).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from llava_more.data.download.layout import (
    DATA_JSON,
    IMAGES_DIR,
    MANIFEST_JSON,
    finish_layout,
    link_or_copy,
    reset_outputs,
)
from llava_more.data.llava_json import read_records
from llava_more.errors import DataError


def balanced_shares(total: int, parts: list[str]) -> dict[str, int]:
    """``total`` split as evenly as possible over ``parts``, remainder to the first ones."""
    if not parts:
        raise DataError("a mix needs at least one part")
    base, extra = divmod(total, len(parts))
    return {part: base + (1 if i < extra else 0) for i, part in enumerate(parts)}


def _part_manifest_sha(part_dir: Path) -> str | None:
    manifest = part_dir / MANIFEST_JSON
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text()).get("data_json_sha256")


def mix_datasets(parts: dict[str, str | Path], out_dir: str | Path, *, size: int, seed: int) -> dict:
    """Write the mix of ``parts`` (name -> folder with ``data.json`` + ``images/``) under ``out_dir``."""
    out = Path(out_dir)
    shares = balanced_shares(size, list(parts))
    reset_outputs(out)
    images_out = out / IMAGES_DIR
    if images_out.is_symlink():
        images_out.unlink()
    elif images_out.exists():
        shutil.rmtree(images_out)
    mixed: list[dict] = []
    part_counts = {}
    for name, folder in parts.items():
        folder = Path(folder)
        json_path = folder / DATA_JSON
        if not json_path.is_file():
            raise DataError(
                f"{json_path}: part {name!r} of the mix is not there; fetch it first (llava-more fetch-data --name {name})"
            )
        records = [r for r in read_records(json_path) if r.get("image")]
        if len(records) < shares[name]:
            raise DataError(
                f"{json_path}: part {name!r} has {len(records)} image records, fewer than its share {shares[name]} of "
                f"the {size}-record mix; fetch a larger {name} or lower the mix size"
            )
        picked = sorted(
            random.Random(f"llava-more/mix/{seed}/{name}").sample(range(len(records)), shares[name])
        )
        for index in picked:
            record = records[index]
            image = f"{name}/{record['image']}"
            source = folder / IMAGES_DIR / record["image"]
            if not source.is_file():
                raise DataError(
                    f"{source}: image of record {record.get('id')!r} of part {name!r} is missing; fetch {name} again"
                )
            link_or_copy(source, images_out / image)
            mixed.append({**record, "id": f"{name}-{record['id']}", "image": image})
        part_counts[name] = {
            "available": len(records),
            "taken": shares[name],
            "data_json_sha256": _part_manifest_sha(folder),
        }
    random.Random(f"llava-more/mix/{seed}").shuffle(mixed)
    manifest = {
        "source": "mix",
        "parts": list(parts),
        "seed": seed,
        "size": size,
        "counts": {"records": len(mixed), "parts": part_counts},
    }
    return finish_layout(out, manifest, mixed)
