"""Coordinate conventions, identity grids, interpolation and warping.

Conventions (every module of mgicon follows them; they are upstream icon_registration's):

* Images are tensors of shape ``(B, C, *spatial)`` with ``spatial = (D, H, W)`` in 3-D; axis 0 of ``spatial`` is
  numpy/torch axis 2, which is ITK's z axis for an image read through ITK.
* A *map* (transform) is a tensor of shape ``(B, 3, *grid)``: for every grid point it holds the coordinates of the
  point it maps to, in **[0, 1] coordinates per axis** of the image it samples, channel ``k`` belonging to spatial
  axis ``k`` (channel 0 = first spatial axis, i.e. ITK z).  Voxel ``i`` of an axis with ``N`` voxels sits at
  ``i / (N - 1)``: the corners of the first and last voxel centres are 0 and 1 (``align_corners=True``).
* A displacement field is ``map - identity`` in the same units.
* ``phi_AB`` registers moving image A to fixed image B: ``A ∘ phi_AB ≈ B``, i.e. the warped moving image is A
  sampled at ``phi_AB(x)`` for the fixed-grid points ``x``.
* Interpolation is trilinear; outside the image the value of the nearest border voxel is used ("border") unless a
  caller asks for zeros.  On the CPU, 3-D sampling runs :mod:`mgicon.trilinear`'s kernels (the same function as
  ``F.grid_sample``, faster); :func:`native_sampling` switches to PyTorch's kernel.

Physical units (mm, spacing, direction) never appear here: :mod:`mgicon.io` converts.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from mgicon import trilinear

_use_kernel = True  # mgicon.trilinear for 3-D CPU sampling, resize for regular grids (see native_sampling)


@contextlib.contextmanager
def native_sampling() -> Iterator[None]:
    """Within the block every sampling goes through ``F.grid_sample``, as before :mod:`mgicon.trilinear` and
    :func:`resize` existed (benchmarks compare the two; the values agree to float rounding)."""
    global _use_kernel
    previous, _use_kernel = _use_kernel, False
    try:
        yield
    finally:
        _use_kernel = previous


@lru_cache(maxsize=32)
def _identity_cached(shape: tuple[int, ...], device: str, dtype: torch.dtype) -> torch.Tensor:
    axes = [torch.arange(n, dtype=torch.float64) / max(n - 1, 1) for n in shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)[None]
    return grid.to(device=device, dtype=dtype)


def identity_grid(
    shape: Sequence[int], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The identity map of a grid of ``shape`` (spatial only): a ``(1, len(shape), *shape)`` tensor in [0,1]."""
    return _identity_cached(tuple(int(s) for s in shape), str(torch.device(device)), dtype)


def _to_grid_sample(coordinates: torch.Tensor) -> torch.Tensor:
    """[0,1] coordinates with channels in axis order -> grid_sample's [-1,1] channels-last (x, y, z) order."""
    ndim = coordinates.shape[1]
    grid = coordinates.flip(1) * 2.0 - 1.0
    return grid.permute(0, *range(2, ndim + 2), 1)


def interpolate(
    image: torch.Tensor, coordinates: torch.Tensor, padding: str = "border", mode: str = "bilinear"
) -> torch.Tensor:
    """Sample ``image`` (B, C, *spatial) at ``coordinates`` (B or 1, ndim, *points) given in [0,1] coordinates.

    Returns ``(B, C, *points)``.  ``padding`` is ``"border"`` or ``"zeros"``; ``mode`` ``"bilinear"``
    (trilinear in 3-D) or ``"nearest"``.
    """
    if coordinates.shape[0] != image.shape[0]:
        if image.shape[0] == 1:
            image = image.expand(coordinates.shape[0], *image.shape[1:])
        elif coordinates.shape[0] != 1:
            raise ValueError(f"batch sizes differ: image {image.shape[0]}, coordinates {coordinates.shape[0]}")
    if mode == "bilinear" and _use_kernel and trilinear.supports(image, coordinates):
        return trilinear.sample(image, coordinates, padding)
    if coordinates.shape[0] != image.shape[0]:
        coordinates = coordinates.expand(image.shape[0], *coordinates.shape[1:])
    grid = _to_grid_sample(coordinates).to(image.dtype)
    return F.grid_sample(image, grid, mode=mode, padding_mode=padding, align_corners=True)


def resize(field: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``field`` (B, C, *spatial) sampled at the identity grid of ``shape``, ``interpolate(field,
    identity_grid(shape))``, computed as a trilinear resize with aligned corners (no coordinates, much cheaper);
    ``field`` itself when its grid is ``shape``."""
    shape = tuple(int(s) for s in shape)
    if tuple(field.shape[2:]) == shape:
        return field
    if not _use_kernel:
        return interpolate(field, identity_grid(shape, field.device, field.dtype))
    return F.interpolate(field, size=shape, mode="trilinear" if len(shape) == 3 else "bilinear", align_corners=True)


def warp(image: torch.Tensor, phi: torch.Tensor, zero_boundary: bool = False) -> torch.Tensor:
    """The image ``image ∘ phi``: ``image`` sampled at the map ``phi``'s points (trilinear)."""
    return interpolate(image, phi, padding="zeros" if zero_boundary else "border")


class DisplacementChain:
    """A map made of displacement fields composed one after the other.

    ``fields[0]`` is applied first: ``phi(x) = f_n(... f_1(f_0(x)))`` with ``f_k(y) = y + u_k(y)`` and ``u_k`` the
    trilinear interpolant of ``fields[k]`` (border padding).  A multi-step network returns its finest, last step
    first, so that the chain for ``TwoStep(phi, psi)`` is ``psi``'s fields followed by ``phi``'s.
    Fields may have different spatial sizes: all live on [0,1] coordinates.
    """

    __slots__ = ("fields",)

    def __init__(self, fields: Sequence[torch.Tensor]):
        self.fields = list(fields)

    def then(self, outer: "DisplacementChain") -> "DisplacementChain":
        """``outer ∘ self``: apply ``self`` first, then ``outer``."""
        return DisplacementChain(self.fields + outer.fields)

    def __call__(self, coordinates: torch.Tensor) -> torch.Tensor:
        """Evaluate the map at arbitrary points ``(B or 1, ndim, *points)`` in [0,1] coordinates."""
        x = coordinates
        for field in self.fields:
            x = x + interpolate(field, x)
        return x

    def on_grid(self, shape: Sequence[int] | None = None) -> torch.Tensor:
        """Evaluate the map on the identity grid of ``shape`` (default: the first field's grid).

        The first field is sampled on a regular grid: on its own grid it is added to the identity directly, on
        another it is resized (trilinear with aligned corners: the values sampling at the identity gives).
        """
        first = self.fields[0]
        shape = tuple(first.shape[2:]) if shape is None else tuple(shape)
        x = identity_grid(shape, first.device, first.dtype) + resize(first, shape)
        for field in self.fields[1:]:
            x = x + interpolate(field, x)
        return x

    def detach(self) -> "DisplacementChain":
        return DisplacementChain([f.detach() for f in self.fields])
