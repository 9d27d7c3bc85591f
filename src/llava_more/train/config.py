"""The configuration of one training run (``TrainConfig``) and how a global batch is split over devices.

A ``TrainConfig`` is a stage recipe (``llava_more.config.StageRecipe``: the hyperparameters of
``protocols.<name>.stage1|stage2``, validated there) plus the options of one run that a protocol does
not fix (seed, a step limit for smoke runs, data-loader workers, checkpoint retention). It reads like
one flat record: ``cfg.lr`` is the recipe's learning rate, ``cfg.seed`` the run's seed. The global
batch is part of the recipe and must not change with the hardware, so ``split_batch`` derives the
per-device batch and gradient accumulation from the number of devices at launch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from llava_more.config.recipe import StageRecipe
from llava_more.errors import ConfigError

RECIPE_FIELDS = frozenset(f.name for f in dataclasses.fields(StageRecipe))


@dataclass(frozen=True, init=False)
class TrainConfig:
    """A stage recipe plus run options. Built from keyword arguments of either kind:
    ``TrainConfig(lr=3e-3, max_length=512, seed=1)``, or ``TrainConfig(recipe, max_steps=2)``."""

    recipe: StageRecipe
    seed: int = 0
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs, tests)
    num_workers: int = 0
    keep_checkpoints: int = 2  # complete checkpoints kept in the work dir
    logging_steps: int = 1

    def __init__(self, recipe: StageRecipe | None = None, **options: Any) -> None:
        changes = {k: options.pop(k) for k in list(options) if k in RECIPE_FIELDS}
        recipe = dataclasses.replace(recipe or StageRecipe(), **changes)
        recipe.validate("train config")
        object.__setattr__(self, "recipe", recipe)
        for f in dataclasses.fields(self):
            if f.name != "recipe":
                object.__setattr__(self, f.name, options.pop(f.name, f.default))
        if options:
            raise ConfigError(f"train config: unknown option(s) {', '.join(sorted(options))}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError(f"train config: max_steps must be positive, got {self.max_steps}")
        if self.keep_checkpoints <= 0 or self.logging_steps <= 0:
            raise ConfigError("train config: keep_checkpoints and logging_steps must be positive")

    def __getattr__(self, name: str) -> Any:
        # Called only for names the run options do not have: the recipe's fields and properties.
        if name.startswith("__") or name == "recipe":
            raise AttributeError(name)
        return getattr(self.recipe, name)

    @classmethod
    def from_protocol(cls, stage_block: StageRecipe | Mapping[str, Any], **run_options: Any) -> TrainConfig:
        """A run of a protocol stage (a ``StageRecipe`` or a raw stage mapping of ``params.yaml``).

        ``run_options`` set run-level fields (``seed``, ``max_steps``, ``num_workers``) or override a
        recipe field (``lora_r``); ``None`` values are ignored so CLI defaults do not override the protocol.
        """
        if isinstance(stage_block, Mapping):
            stage_block = StageRecipe.parse(dict(stage_block), "protocol stage")
        return cls(stage_block, **{k: v for k, v in run_options.items() if v is not None})

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def flat(self) -> dict[str, Any]:
        """Recipe fields and run options in one mapping."""
        run = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "recipe"}
        return {**self.recipe.as_dict(), **run}


class BatchSplit(NamedTuple):
    """How the global batch is formed: ``per_device * grad_accum * world_size == global_batch``."""

    per_device: int
    grad_accum: int

    def describe(self, global_batch: int, world_size: int) -> str:
        return (
            f"global batch {global_batch} = {self.per_device} per device x {self.grad_accum} accumulation "
            f"step(s) x {world_size} device(s)"
        )


def split_batch(global_batch: int, per_device_batch: int, world_size: int) -> BatchSplit:
    """Split ``global_batch`` over ``world_size`` devices without changing it.

    Uses the largest per-device batch that is at most ``per_device_batch`` and divides the share of
    each device; the rest is gradient accumulation. Raises ``ConfigError`` when the global batch
    cannot be shared evenly by the devices.
    """
    if global_batch <= 0 or per_device_batch <= 0 or world_size <= 0:
        raise ConfigError(
            f"batch split: global_batch ({global_batch}), per_device_batch ({per_device_batch}) and the "
            f"device count ({world_size}) must be positive"
        )
    if global_batch % world_size:
        fits = [n for n in range(1, min(global_batch, 64) + 1) if global_batch % n == 0]
        raise ConfigError(
            f"global batch {global_batch} cannot be split evenly over {world_size} devices; run on a device "
            f"count that divides it ({', '.join(map(str, fits))}) or change the protocol's global_batch"
        )
    per_rank = global_batch // world_size
    per_device = max(d for d in range(1, min(per_device_batch, per_rank) + 1) if per_rank % d == 0)
    return BatchSplit(per_device, per_rank // per_device)
