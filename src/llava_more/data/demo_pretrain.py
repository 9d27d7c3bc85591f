"""Demo twins of the stage-1 (alignment) pre-training sets: LCS, LAION alt-text, Recap, LAION+Recap.

Each record is one rendered scene and one caption, in the layout of ``blip_laion_cc_sbu_558k.json``.
For a given seed the *scenes* are the same whatever the kind; only the captions change, so the
demo's pre-training ablation compares caption styles on the same images. ``mix`` captions exactly
half of the records (rounded down) as alt-text and the rest as recaps, shuffled by the seed.
"""

from __future__ import annotations

import random
from pathlib import Path

from llava_more.data import demo_captions, demo_world
from llava_more.data.demo_files import (
    DemoDataset,
    exact_split,
    finish_dataset,
    image_relpath,
    prepare_out_dir,
    record_rng,
    save_png,
    write_dataset,
)
from llava_more.errors import DataError

PRETRAIN_KINDS: tuple[str, ...] = ("lcs", "alttext", "recap", "mix")
IMAGE_SIZE = 96


def generate_demo_pretrain(out_dir: str | Path, kind: str, n: int, seed: int) -> DemoDataset:
    """Write ``n`` image-caption records of caption style ``kind`` under ``out_dir``."""
    if kind not in PRETRAIN_KINDS:
        raise DataError(f"unknown demo pre-training kind {kind!r}; use one of {', '.join(PRETRAIN_KINDS)}")
    if n < 1:
        raise DataError(f"demo pre-training size must be at least 1, got {n}")
    return write_dataset(out_dir, lambda staging: _write_pretrain(staging, kind, n, seed))


def _write_pretrain(out: Path, kind: str, n: int, seed: int) -> DemoDataset:
    images_dir = prepare_out_dir(out)
    if kind == "mix":
        styles = exact_split(n, {"alttext": 0.5, "recap": 0.5}, random.Random(f"llava-more/mix/{seed}"))
    else:
        styles = [kind] * n
    records = []
    for index, style in enumerate(styles):
        scene = demo_world.random_scene(record_rng("scene", seed, index))
        relpath = image_relpath(index)
        save_png(demo_world.render_scene(scene, IMAGE_SIZE), images_dir, relpath)
        text = demo_captions.caption(scene, style, record_rng(f"caption-{style}", seed, index))
        records.append(
            {
                "id": f"{style}-{index:09d}",
                "image": relpath,
                "conversations": [
                    {"from": "human", "value": "<image>\n"},
                    {"from": "gpt", "value": text},
                ],
            }
        )
    counts = {"records": n, "images": n}
    for style in sorted(set(styles)):
        counts[style] = styles.count(style)
    manifest = {
        "generator": "llava_more.data.demo_pretrain",
        "kind": kind,
        "seed": seed,
        "size": n,
        "image_size": IMAGE_SIZE,
        "counts": counts,
    }
    return finish_dataset(out, records, manifest)
