"""Fixtures shared by the training tests: a tiny saved-and-loaded bundle and training samples for it.

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
