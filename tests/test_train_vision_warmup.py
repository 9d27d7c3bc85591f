"""The tiny encoders' warm-up on the demo world, and tiny pairs built on a warmed encoder."""

from __future__ import annotations

import json

import pytest
import torch

from llava_more.data import demo_world as world
from llava_more.model import get_vision
from llava_more.model.bundle import load_bundle
from llava_more.train.vision_warmup import _labels, _patch_cells, warm_up_vision


@pytest.mark.parametrize("vision_id", ["clip-l-336", "siglip2-so400m-384", "dinov2-l-224"])
def test_patches_map_to_the_grid_cell_under_them(vision_id):
    spec = get_vision(vision_id)
    grid = spec.image_size("tiny") // spec.patch_size("tiny")
    cells = _patch_cells(spec.image_processor("tiny"), grid).view(grid, grid)
    # 6x6 patches over a 3x3 scene grid: each cell is a 2x2 block, row-major.
    expected = torch.arange(9).view(3, 3).repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert torch.equal(cells, expected)


def test_labels_describe_each_cell_and_the_whole_scene():
    scene = world.Scene(
        shapes=(
            world.Shape(kind="square", color="blue", row=1, col=2, size="big"),
            world.Shape(kind="circle", color="red", row=0, col=0, size="small"),
        ),
        background="black",
        word="zoo",
    )
    cells, whole, present = _labels(scene)
    assert cells["colour"].tolist() == [1 + 0, 0, 0, 0, 0, 1 + 2, 0, 0, 0]  # red at (0,0), blue at (1,2)
    assert (
        cells["kind"][5] == 1 + world.SHAPES.index("square")
        and cells["big"].tolist() == [0] * 5 + [1] + [0] * 3
    )
    assert whole == {
        "word": 1 + world.WORDS.index("zoo"),
        "big_colour": world.COLOR_NAMES.index("blue"),
        "big_cell": 5,
        "background": world.BACKGROUND_NAMES.index("black"),
        "count": 1,  # two shapes, as class 1
    }
    assert present.tolist() == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]


def test_warm_up_learns_and_saves_a_loadable_encoder(tmp_path):
    spec = get_vision("dinov2-l-reg-224")  # the one with registers: 5 prefix tokens dropped
    report = warm_up_vision(spec.id, tmp_path / "enc", steps=80, batch_size=32, seed=1)
    losses = [h["loss"] for h in report["loss"]]
    assert sum(losses[-2:]) < 0.8 * sum(losses[:2]), losses
    saved = json.loads((tmp_path / "enc" / "warmup.json").read_text())
    assert saved["steps"] == 80 and saved["vision"] == spec.id
    tower = spec.model_class.from_pretrained(tmp_path / "enc")
    torch.manual_seed(1)
    fresh = spec.model_class(spec.config("tiny"))
    changed = [n for n, p in tower.state_dict().items() if not torch.equal(p, fresh.state_dict()[n])]
    assert changed, "the saved encoder is the random initialisation"


def test_init_model_takes_the_warmed_encoder(tmp_path):
    from llava_more.model.initialize import init_model
    from llava_more.text.tokenizer import train_demo_tokenizer

    warm_up_vision("clip-l-336", tmp_path / "enc", steps=5, batch_size=4)
    train_demo_tokenizer(["a red circle", "what color is the square?"] * 20, tmp_path / "tok", 300)
    init_model(
        "llama3.1-8b",
        "clip-l-336",
        size="tiny",
        tokenizer_dir=tmp_path / "tok",
        out_dir=tmp_path / "bundle",
        vision_path=str(tmp_path / "enc"),
    )
    model = load_bundle(tmp_path / "bundle").model
    tower = get_vision("clip-l-336").model_class.from_pretrained(tmp_path / "enc")
    for name, value in tower.state_dict().items():
        assert torch.equal(model.model.vision_tower.state_dict()[name], value), name
