"""Fixtures shared by the training tests (a tiny saved-and-loaded bundle and training samples for it),
and the order in which the suite's modules run.

A test module that defines a fixture of the same name uses its own instead.
"""

from __future__ import annotations

import pytest

from llava_more.model.bundle import load_bundle
from tests.test_train_helpers import make_bundle, make_dataset


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(make_bundle(tmp_path_factory.mktemp("bundle")))


@pytest.fixture(scope="module")
def dataset(bundle, tmp_path_factory):
    """Six image and three text-only instruction samples, encoded as stage 2 encodes them."""
    from tests.test_train_data import train_set

    return train_set(bundle, make_dataset(tmp_path_factory.mktemp("data"), n_images=6, n_text=3))


# The longest modules, longest first (pytest's durations on a 2-core machine): a module whose cost is
# mostly its fixture would sort late by its count of end-to-end tests.
LONGEST_MODULES = (
    "tests/test_pipeline.py",
    "tests/test_pipeline_remote.py",
    "tests/test_slurm_profile.py",
    "tests/test_model_declared.py",
    "tests/test_train_distributed.py",
    "tests/test_published.py",
)
HEAVY_MARKS = ("slow", "slurm")


def pytest_collection_modifyitems(config, items) -> None:
    """The longest modules first, then those with the most end-to-end tests; each module's tests in
    their own order.

    `make test` hands whole modules to its workers (pytest-xdist, ``--dist loadfile``) in this
    order: the long runs start at once and the short modules fill in around them, so the workers
    finish together rather than one waiting on a long module picked up last.
    """
    heavy: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        heavy[module] = heavy.get(module, 0) + any(item.get_closest_marker(m) for m in HEAVY_MARKS)
    first_seen = {module: i for i, module in enumerate(dict.fromkeys(heavy))}

    def rank(item) -> tuple[int, int, int]:
        module = item.nodeid.split("::")[0]
        longest = LONGEST_MODULES.index(module) if module in LONGEST_MODULES else len(LONGEST_MODULES)
        return longest, -heavy[module], first_seen[module]

    items.sort(key=rank)
