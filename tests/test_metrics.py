"""Metrics against analytic truths and upstream's fold count."""

import numpy as np
import pytest
import torch

from mgicon import metrics
from mgicon.maps import identity_grid


def _cube(shape, lo, hi, label=1):
    x = np.zeros(shape, dtype=np.int32)
    x[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = label
    return x


@pytest.mark.parametrize(
    "a_box, b_box, expected",
    [
        (((0, 0, 0), (4, 4, 4)), ((0, 0, 0), (4, 4, 4)), 1.0),
        (((0, 0, 0), (4, 4, 4)), ((2, 0, 0), (6, 4, 4)), 0.5),  # half of each cube overlaps
        (((0, 0, 0), (4, 4, 4)), ((4, 4, 4), (8, 8, 8)), 0.0),
        (((0, 0, 0), (2, 4, 4)), ((0, 0, 0), (4, 4, 4)), 2 * 32 / (32 + 64)),
    ],
)
def test_dice_of_known_overlaps(a_box, b_box, expected):
    a = _cube((8, 8, 8), *a_box)
    b = _cube((8, 8, 8), *b_box)
    assert metrics.dice(a, b) == {1: pytest.approx(expected)}


def test_mean_dice_excludes_background_and_labels_absent_from_both():
    a = _cube((8, 8, 8), (0, 0, 0), (4, 4, 4), 1) + _cube((8, 8, 8), (4, 4, 4), (8, 8, 8), 3)
    b = _cube((8, 8, 8), (0, 0, 0), (4, 4, 4), 1)
    assert metrics.dice(a, b) == {1: 1.0, 3: 0.0}
    assert metrics.mean_dice(a, b) == pytest.approx(0.5)
    assert metrics.mean_dice(a, b, labels=[1, 2]) == pytest.approx(1.0)


def test_mtre_of_a_translation_with_anisotropic_spacing():
    rng = np.random.default_rng(0)
    fixed = rng.uniform(0, 50, size=(20, 3))
    moved = fixed + np.array([1.0, 2.0, 3.0])
    spacing = (2.0, 0.5, 1.0)
    assert metrics.mtre(fixed, moved, spacing) == pytest.approx(np.sqrt(2.0**2 + 1.0**2 + 3.0**2))
    assert metrics.mtre(fixed, fixed, spacing) == 0


def _folded_map(n):
    """Identity, except that axis 0 is mirrored in its second half: cells n/2 .. n−2 along axis 0 fold."""
    phi = identity_grid((n, n, n)).clone()
    idx = torch.arange(n, dtype=torch.float32)
    mirrored = torch.where(idx < n // 2, idx, n - 1 - idx) / (n - 1)
    phi[:, 0] = mirrored.view(n, 1, 1)
    return phi


@pytest.mark.parametrize("n", [8, 12])
def test_negative_jacobian_of_a_hand_built_fold(n):
    expected = (n // 2 - 1) / (n - 1) * 100
    assert metrics.negative_jacobian_percent(_folded_map(n)) == pytest.approx(expected)


@pytest.mark.oracle
def test_negative_jacobian_count_equals_upstream_flips():
    from icon_registration.losses import flips

    phi = _folded_map(10) + 0.01 * torch.randn(1, 3, 10, 10, 10)
    assert metrics.negative_jacobian_percent(phi) == pytest.approx(flips(phi, in_percentage=True).item())


def test_no_folds_for_identity_and_smooth_diffeomorphism():
    n = 16
    x = identity_grid((n, n, n))
    smooth = x + 0.02 * torch.sin(2 * torch.pi * x.flip(1))
    assert metrics.negative_jacobian_percent(x) == 0
    assert metrics.negative_jacobian_percent(smooth) == 0


@pytest.mark.parametrize("spacing, folds", [((1.0, 1.0, 1.0), True), ((2.0, 1.0, 1.0), False)])
def test_physical_jacobian_uses_the_spacing(spacing, folds):
    # u0 = −1.5 mm per voxel along axis 0: du0/dx0 = −1.5/spacing0 mm/mm
    shape = (6, 5, 4)
    u = np.zeros((3, *shape))
    u[0] = -1.5 * np.arange(shape[0]).reshape(-1, 1, 1)
    det = metrics.jacobian_determinant_physical(u, spacing)
    assert np.allclose(det, 1 - 1.5 / spacing[0])
    assert metrics.negative_jacobian_percent_physical(u, spacing) == (100.0 if folds else 0.0)


def test_physical_jacobian_of_a_linear_field_and_channel_last_layout():
    rng = np.random.default_rng(1)
    a = 0.1 * rng.standard_normal((3, 3))
    grid = np.stack(np.meshgrid(*[np.arange(s) * sp for s, sp in zip((5, 6, 7), (1.0, 0.7, 2.0))], indexing="ij"))
    u = np.einsum("ij,j...->i...", a, grid)
    det = metrics.jacobian_determinant_physical(np.moveaxis(u, 0, -1), (1.0, 0.7, 2.0))
    assert np.allclose(det, np.linalg.det(np.eye(3) + a))
    assert metrics.negative_jacobian_percent_physical(np.zeros((3, 4, 4, 4))) == 0
