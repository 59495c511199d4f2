"""Shared fixtures: small test volumes and a fixed global seed; the longest modules collected first."""

from __future__ import annotations

import pytest
import torch

from mgicon.testing import smooth_volume


@pytest.fixture
def volumes():
    """Two smooth random volumes (1, 1, 24, 28, 32) and a binary mask."""
    shape = (24, 28, 32)
    return smooth_volume(shape, 1), smooth_volume(shape, 2), (smooth_volume(shape, 3) > 0.4).float()


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


#: the longest modules (about 4 min, 1 min, 1.5 min, 1 min on 2 cores), collected first: under `make test`
#: (pytest-xdist, one module per worker at a time) they start at once instead of last
SLOW_FIRST = ("test_pipeline.py", "test_cli_oracle.py", "test_workflow.py", "test_train.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: the rest keep their order
