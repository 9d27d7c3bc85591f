"""A study's ``seeds``: train every experiment once per seed, to see the seed-to-seed noise.

``seeds: [0, 1, 2]`` makes each experiment three trainings, each with its own initial model (the
seed of the projector's random initialisation; for tiny twins also of the random LLM trunk) and its
own training seed (data order, dropout) in both stages. The report averages them into one row and
shows their spread.

Seed 0 is the seed a study without ``seeds`` trains with, so its experiment keeps the plain id and
paths: adding ``seeds: [0, 1]`` to a finished study trains only the seed-1 runs. Other seeds add
``_seed<N>`` to the experiment id and to its initial model's id. A study without ``seeds`` has
experiments with ``seed`` None: the ids, paths and commands of a study that never heard of seeds.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from llava_more.config.checks import typed
from llava_more.errors import ConfigError

DEFAULT_SEED = 0


def seed_suffix(seed: int | None) -> str:
    """What a seed adds to an experiment's (and its initial model's) id."""
    return "" if seed is None or seed == DEFAULT_SEED else f"_seed{seed}"


def parse_seeds(raw: Any, path: str) -> tuple[int, ...] | None:
    """``studies.<name>.seeds``: distinct non-negative integers (absent or null: no seeds)."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{path}: expected a non-empty list of integers (training seeds), got {raw!r}")
    seeds = []
    for i, value in enumerate(raw):
        seed = typed(value, int, f"{path}[{i}]")
        if seed < 0:
            raise ConfigError(f"{path}[{i}]: a seed must be 0 or more, got {seed}")
        if seed in seeds:
            raise ConfigError(f"{path}[{i}]: seed {seed} is listed twice")
        seeds.append(seed)
    return tuple(seeds)


def expand_seeds(experiments: tuple, seeds: tuple[int, ...] | None) -> tuple:
    """Each experiment (``schema.Experiment``) once per seed, a seed's runs next to each other."""
    if seeds is None:
        return experiments
    return tuple(dataclasses.replace(exp, seed=seed) for exp in experiments for seed in seeds)


def seed_option(seed: int | None) -> str:
    """The `` --seed N`` option of ``init-model`` and ``train`` (with its leading space), empty for
    the default seed: a study without seeds, and seed 0 of one with, run the very same commands."""
    return "" if seed is None or seed == DEFAULT_SEED else f" --seed {seed}"
