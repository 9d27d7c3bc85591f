"""TrainConfig from params.yaml protocols, and the global-batch split over any device count."""

from __future__ import annotations

from pathlib import Path

import pytest

from llava_more.config import load_params
from llava_more.errors import ConfigError
from llava_more.train import TrainConfig, split_batch

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


@pytest.mark.parametrize(
    ("global_batch", "per_device", "world", "expected"),
    [
        (256, 32, 1, (32, 8)),
        (256, 32, 2, (32, 4)),
        (256, 32, 8, (32, 1)),
        (48, 16, 1, (16, 3)),
        (48, 16, 2, (12, 2)),  # 24 per device does not fit 16: the per-device batch shrinks to 12
        (48, 16, 3, (16, 1)),
        (48, 16, 8, (6, 1)),
        (128, 16, 3 * 1, None),  # 128 is not divisible by 3
    ],
)
def test_split_batch_keeps_the_global_batch(global_batch, per_device, world, expected):
    if expected is None:
        with pytest.raises(ConfigError, match="cannot be split evenly over 3 devices"):
            split_batch(global_batch, per_device, world)
        return
    split = split_batch(global_batch, per_device, world)
    assert tuple(split) == expected
    assert split.per_device * split.grad_accum * world == global_batch
    assert split.per_device <= per_device
    assert split.describe(global_batch, world) == (
        f"global batch {global_batch} = {expected[0]} per device x {expected[1]} accumulation step(s) x {world} device(s)"
    )


def test_split_batch_rejects_nonsense():
    with pytest.raises(ConfigError):
        split_batch(0, 4, 1)
    with pytest.raises(ConfigError):
        split_batch(8, 4, 0)


def test_train_config_from_the_papers_protocol():
    stage2 = load_params(PARAMS, check_backbones=False).protocols["llava15"].stage(2)
    cfg = TrainConfig.from_protocol(stage2, seed=3, max_steps=None, lora_r=8)
    assert (cfg.global_batch, cfg.per_device_batch, cfg.lr) == (128, 16, 2e-5)
    assert (cfg.deepspeed, cfg.image_aspect_ratio, cfg.group_by_length, cfg.precision) == (
        "zero3",
        "pad",
        True,
        "bf16",
    )
    assert (cfg.seed, cfg.max_steps, cfg.lora_r, cfg.effective_lora_alpha) == (3, None, 8, 16)


def test_train_config_from_a_raw_block_is_validated():
    block = load_params(PARAMS, check_backbones=False).protocols["demo"].stage(1).as_dict()
    assert TrainConfig.from_protocol(block).global_batch == block["global_batch"]
    with pytest.raises(ConfigError, match="deepspeed"):
        TrainConfig.from_protocol({**block, "deepspeed": "zero4"})
    with pytest.raises(ConfigError, match="unknown option"):
        TrainConfig.from_protocol(block, learning_rate=1.0)
