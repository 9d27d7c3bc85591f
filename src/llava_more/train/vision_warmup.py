"""A brief supervised warm-up of a tiny twin's vision encoder on the demo world.

The study's encoders (CLIP, SigLIP, DINOv2) are pretrained and frozen; a frozen *random* encoder is
not a faithful twin of them. Measured here: with a random tiny tower, a tiny LLM trained on three
question types stayed at the answer priors for 600 steps; with this warm-up it learned them. So tiny
studies give each encoder family a few hundred steps of supervision before the LLaVA protocol
starts (the encoder stays frozen in stages 1 and 2, as in the study). Every patch of the layer
LLaVA reads (second to last) learns the colour and kind of the grid cell it falls in and whether
that is the scene's big shape. The mean over patches learns what describes the whole scene: the
printed word, the big shape's colour and place, the background, the count and which colours are
present. The study's encoders are like that too (CLIP and SigLIP learn from whole-image captions);
a tiny LLM reads scene-level facts from the average of the image tokens in far fewer steps than it
learns to pick out one patch (measured: README, "What the demo learns").
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import torch
from torch import nn

from llava_more.data import demo_world as world
from llava_more.model import get_vision
from llava_more.outputs import atomic_dir, check_replaceable

logger = logging.getLogger(__name__)

RENDER_SIZE = 96  # the demo data's image size
REPORT_FILE = "warmup.json"  # written beside the encoder: what the warm-up did


def _patch_cells(processor, grid: int) -> torch.Tensor:
    """For each patch of the encoder's grid, the demo scene cell (row * 3 + col) under its centre.

    Follows the processor's geometry: resize (shortest edge or fixed size), then centre crop.
    """
    size = processor.size
    resized = size.get("shortest_edge") or size["height"]
    crop = processor.crop_size["height"] if getattr(processor, "do_center_crop", False) else resized
    offset = (resized - crop) / 2
    patch = crop / grid
    centres = [(i + 0.5) * patch + offset for i in range(grid)]
    cell = [
        min(world.GRID - 1, int(c * RENDER_SIZE / resized // (RENDER_SIZE / world.GRID))) for c in centres
    ]
    return torch.tensor([cell[r] * world.GRID + cell[c] for r in range(grid) for c in range(grid)])


# Per-patch targets (the scene cell under the patch) and whole-scene targets (read from the mean patch).
CELL_HEADS = {"colour": len(world.COLOR_NAMES) + 1, "kind": len(world.SHAPES) + 1, "big": 2}
SCENE_HEADS = {
    "word": len(world.WORDS) + 1,
    "big_colour": len(world.COLOR_NAMES),
    "big_cell": world.GRID * world.GRID,
    "background": len(world.BACKGROUND_NAMES),
    "count": world.GRID * world.GRID,  # at most one shape per cell
}


def _labels(scene: world.Scene) -> tuple[dict[str, torch.Tensor], dict[str, int], torch.Tensor]:
    """Per-cell class ids, whole-scene class ids and the multi-hot vector of the colours present."""
    cells = {name: torch.zeros(world.GRID * world.GRID, dtype=torch.long) for name in CELL_HEADS}
    present = torch.zeros(len(world.COLOR_NAMES))
    for shape in scene.shapes:
        cell = shape.row * world.GRID + shape.col
        cells["colour"][cell] = 1 + world.COLOR_NAMES.index(shape.color)
        cells["kind"][cell] = 1 + world.SHAPES.index(shape.kind)
        cells["big"][cell] = int(shape.size == "big")
        present[world.COLOR_NAMES.index(shape.color)] = 1.0
    main = world.main_shape(scene)
    whole = {
        "word": 1 + world.WORDS.index(scene.word) if scene.word else 0,
        "big_colour": world.COLOR_NAMES.index(main.color),
        "big_cell": main.row * world.GRID + main.col,
        "background": world.BACKGROUND_NAMES.index(scene.background),
        "count": world.count_shapes(scene) - 1,
    }
    return cells, whole, present


def warm_up_vision(
    vision_id: str,
    out_dir: str | Path,
    *,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
) -> dict:
    """Train the tiny twin of ``vision_id`` for ``steps`` and save it (Hugging Face format) to ``out_dir``."""
    check_replaceable(out_dir, REPORT_FILE)  # before the training, not after it
    spec = get_vision(vision_id)
    torch.manual_seed(seed)
    tower = spec.model_class(spec.config("tiny"))
    processor = spec.image_processor("tiny")
    grid = spec.image_size("tiny") // spec.patch_size("tiny")
    cells = _patch_cells(processor, grid)
    hidden = tower.config.hidden_size
    heads = nn.ModuleDict(
        {name: nn.Linear(hidden, n) for name, n in {**CELL_HEADS, **SCENE_HEADS}.items()}
        | {"present": nn.Linear(hidden, len(world.COLOR_NAMES))}
    )
    optimizer = torch.optim.AdamW([*tower.parameters(), *heads.parameters()], lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    ce = nn.functional.cross_entropy
    tower.train()
    start, history = time.monotonic(), []
    for step in range(1, steps + 1):
        scenes = [world.random_scene(rng) for _ in range(batch_size)]
        pixels = processor(images=[world.render_scene(s, RENDER_SIZE) for s in scenes], return_tensors="pt")
        per_cell, whole, present = zip(*(_labels(s) for s in scenes), strict=True)
        states = tower(pixels["pixel_values"], output_hidden_states=True).hidden_states[-2]
        patches = states[:, spec.num_prefix_tokens :]
        pooled = patches.mean(1)
        loss = sum(
            ce(
                heads[name](patches).flatten(0, 1),
                torch.stack([c[name] for c in per_cell])[:, cells].flatten(),
            )
            for name in CELL_HEADS
        ) + sum(ce(heads[name](pooled), torch.tensor([w[name] for w in whole])) for name in SCENE_HEADS)
        loss = loss + nn.functional.binary_cross_entropy_with_logits(
            heads["present"](pooled), torch.stack(present)
        )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 10 == 0 or step == steps:
            history.append({"step": step, "loss": round(loss.item(), 4)})
        if step % 50 == 0 or step == steps:
            logger.info("warm-up %s: step %d/%d loss %.4f", vision_id, step, steps, loss.item())
    report = {
        "vision": vision_id,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "seconds": round(time.monotonic() - start, 1),
        "loss": history,
    }
    tower.eval()
    with atomic_dir(out_dir, signature=REPORT_FILE) as staging:
        tower.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n")
    return report
