"""Shared fixtures: small test volumes and a fixed global seed."""

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
