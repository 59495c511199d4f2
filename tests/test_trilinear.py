"""The CPU trilinear kernels against PyTorch's ``F.grid_sample`` (the independent truth): values and both gradients,
for border and zero padding, points inside and outside, shared and per-sample coordinates; and finite differences."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mgicon import trilinear
from mgicon.maps import DisplacementChain, identity_grid, interpolate, native_sampling, resize


def _grid_sample(image: torch.Tensor, coords: torch.Tensor, padding: str) -> torch.Tensor:
    grid = (coords.flip(1) * 2 - 1).permute(0, 2, 3, 4, 1).to(image.dtype)
    if grid.shape[0] != image.shape[0]:
        grid = grid.expand(image.shape[0], *grid.shape[1:])
    return F.grid_sample(image, grid, mode="bilinear", padding_mode=padding, align_corners=True)


def _points(batch: int, shape: tuple[int, ...], spread: float, generator: torch.Generator) -> torch.Tensor:
    """Near-identity points plus random ones, some outside [0, 1]."""
    identity = identity_grid(shape, dtype=torch.float64)
    coarse = spread * torch.randn(batch, 3, 3, 3, 3, generator=generator, dtype=torch.float64)
    smooth = F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)
    scattered = torch.rand(batch, 3, *shape, generator=generator, dtype=torch.float64) * 1.4 - 0.2
    return torch.cat([identity + smooth, scattered], dim=2)


CASES = [  # (image shape, points grid per sample, coordinates' batch)
    ((2, 3, 5, 6, 7), (8, 7, 6), 2),  # a coarse 3-channel field at finer points
    ((2, 1, 9, 8, 10), (9, 8, 10), 2),  # an image at its own grid
    ((3, 3, 4, 4, 4), (6, 6, 6), 1),  # points shared by every sample of the batch
    ((1, 2, 1, 5, 6), (2, 3, 4), 1),  # an axis of one voxel
]


@pytest.mark.parametrize("padding", ["border", "zeros"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("image_shape, points, coords_batch", CASES)
def test_values_and_gradients_equal_grid_sample(image_shape, points, coords_batch, dtype, padding):
    g = torch.Generator().manual_seed(0)
    image = torch.randn(image_shape, generator=g, dtype=torch.float64).to(dtype)
    coords = _points(coords_batch, points, 0.08, g).to(dtype)
    ours_image, ours_coords = image.clone().requires_grad_(), coords.clone().requires_grad_()
    ref_image, ref_coords = image.clone().requires_grad_(), coords.clone().requires_grad_()
    ours = trilinear.sample(ours_image, ours_coords, padding)
    ref = _grid_sample(ref_image, ref_coords, padding)
    weights = torch.randn(ref.shape, generator=g, dtype=torch.float64).to(dtype)
    (ours * weights).sum().backward()
    (ref * weights).sum().backward()
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    scale = lambda t: t.abs().max().clamp_min(1.0)  # noqa: E731
    assert ours.shape == ref.shape and ours.dtype == dtype
    assert (ours - ref).abs().max() <= tol * scale(ref)
    assert (ours_image.grad - ref_image.grad).abs().max() <= tol * scale(ref_image.grad)
    assert (ours_coords.grad - ref_coords.grad).abs().max() <= tol * scale(ref_coords.grad)


@pytest.mark.parametrize("padding", ["border", "zeros"])
def test_gradients_equal_finite_differences(padding):
    g = torch.Generator().manual_seed(1)
    image = torch.randn(1, 2, 4, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    coords = (_points(1, (2, 2, 2), 0.1, g)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, c: trilinear.sample(a, c, padding), (image, coords))


def test_interpolate_and_warp_use_the_kernel_on_the_cpu_and_agree_with_the_native_path():
    g = torch.Generator().manual_seed(2)
    field = torch.randn(2, 3, 6, 6, 6, generator=g) * 0.05
    chain = DisplacementChain([torch.randn(2, 3, 12, 12, 12, generator=g) * 0.05, field])
    ours = chain.on_grid()
    with native_sampling():
        native = chain.on_grid()
        native_resized = interpolate(field, identity_grid((12, 12, 12)))
    assert (ours - native).abs().max() < 1e-6
    assert (resize(field, (12, 12, 12)) - native_resized).abs().max() < 1e-6


@pytest.mark.parametrize(
    "image, coords, message",
    [
        (torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 3, 3), "CPU float tensors"),
        (torch.zeros(2, 1, 4, 4, 4), torch.zeros(3, 3, 2, 2, 2), "batch sizes differ"),
        (torch.zeros(1, 1, 4, 4, 4, dtype=torch.int32), torch.zeros(1, 3, 2, 2, 2), "CPU float tensors"),
    ],
)
def test_refuses_what_it_does_not_compute(image, coords, message):
    with pytest.raises(ValueError, match=message):
        trilinear.sample(image, coords)
