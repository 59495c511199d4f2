"""Coordinate conventions: identity grids, interpolation, warping and map composition (analytic cases)."""

import pytest
import torch

from mgicon.maps import DisplacementChain, identity_grid, interpolate, warp


def test_identity_grid_spans_unit_cube_with_channel_k_along_axis_k():
    g = identity_grid((3, 4, 5))
    assert g.shape == (1, 3, 3, 4, 5)
    assert g.min() == 0 and g.max() == 1
    assert torch.allclose(g[0, 0, :, 0, 0], torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(g[0, 1, 0, :, 0], torch.tensor([0, 1 / 3, 2 / 3, 1.0]))
    assert torch.allclose(g[0, 2, 0, 0, :], torch.linspace(0, 1, 5))


def test_interpolation_at_identity_returns_the_image(volumes):
    a, _, _ = volumes
    assert torch.allclose(interpolate(a, identity_grid(a.shape[2:])), a, atol=1e-6)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_shift_by_one_voxel_along_each_axis(axis):
    shape = (6, 7, 8)
    image = torch.rand(1, 1, *shape)
    phi = identity_grid(shape).clone()
    phi[:, axis] += 1.0 / (shape[axis] - 1)
    warped = warp(image, phi)
    n = shape[axis]
    assert torch.allclose(warped.narrow(2 + axis, 0, n - 1), image.narrow(2 + axis, 1, n - 1), atol=1e-5)


def test_trilinear_interpolation_reproduces_linear_functions():
    shape = (9, 10, 11)
    x = identity_grid(shape)
    weights = torch.tensor([0.3, -1.2, 2.0]).view(1, 3, 1, 1, 1)
    image = (x * weights).sum(1, keepdim=True) + 0.7
    points = torch.rand(1, 3, 5, 6, 7)
    expected = (points * weights).sum(1, keepdim=True) + 0.7
    assert torch.allclose(interpolate(image, points), expected, atol=1e-5)


def test_zero_padding_outside_and_border_padding():
    image = torch.ones(1, 1, 4, 4, 4)
    outside = torch.full((1, 3, 1, 1, 1), 1.5)
    assert interpolate(image, outside, padding="zeros").item() == 0
    assert interpolate(image, outside, padding="border").item() == 1


def test_chain_composes_translations_and_grid_shortcut_matches_interpolation():
    shape = (8, 8, 8)
    t1 = torch.tensor([0.01, -0.02, 0.03]).view(1, 3, 1, 1, 1).expand(1, 3, *shape)
    t2 = torch.tensor([0.02, 0.01, -0.01]).view(1, 3, 1, 1, 1).expand(1, 3, 4, 4, 4)
    chain = DisplacementChain([t1, t2])
    grid = chain.on_grid()
    assert torch.allclose(grid, identity_grid(shape) + t1 + t2.mean(dim=(2, 3, 4), keepdim=True), atol=1e-6)
    assert torch.allclose(chain(identity_grid(shape)), grid, atol=1e-6)
    assert chain.then(DisplacementChain([t1])).fields[-1] is t1
