"""Trilinear sampling of 3-D tensors on the CPU, forward and backward, compiled with numba.

The same function as ``F.grid_sample(image, grid, mode="bilinear", align_corners=True)`` in 3-D, with ``border`` or
``zeros`` padding, for the [0,1] coordinates of :mod:`mgicon.maps`: voxel ``i`` of an axis of ``N`` voxels sits at
``i / (N − 1)``, and a point ``c`` (per axis) samples

    ``Σ_corners  w_z · w_y · w_x · image[corner]``,  ``w = 1 − f`` or ``f``,  ``f = c·(N − 1) − i0``

over the 8 voxels around it.  ``border`` clips ``c·(N − 1)`` to ``[0, N − 1]`` (the gradient with respect to a
clipped coordinate is zero); ``zeros`` gives corners outside the image the value 0.

Why: PyTorch's CPU kernel for 3-D sampling is a generic scalar loop that recomputes weights and bounds per channel
and corner; half of a training step of the demo's network was spent in it (``benchmarks/train.py``).  These
kernels compute the weights once per point and specialise on what the backward pass needs (the image's gradient,
the coordinates' gradient, or both).  They run in one thread, in a fixed order, so results are deterministic.
CUDA tensors keep PyTorch's kernel.  ``tests/test_maps.py`` checks values and gradients against ``F.grid_sample``.
"""

from __future__ import annotations

import math

import torch
from numba import njit
from torch.autograd.function import once_differentiable

# Every kernel gets contiguous arrays: image (B, C, D, H, W), coordinates (1 or B, 3, P) in [0,1] units, values
# (B, C, P).  A batch of 1 in the coordinates is shared by every image of the batch.


@njit(cache=True, nogil=True, inline="always")
def _axis(x: float, n: int, zeros: bool):
    """``(i0, f, inside, valid0, valid1)`` along one axis for the voxel coordinate ``x`` of an axis of ``n``
    voxels: the lower corner, the fraction, whether ``x`` was not clipped, and whether each corner is inside."""
    if zeros:
        i0 = math.floor(x)
        i = int(i0)
        valid0 = 1.0 if 0 <= i < n else 0.0
        valid1 = 1.0 if 0 <= i + 1 < n else 0.0
        return i, x - i0, 1.0, valid0, valid1
    inside = 1.0 if 0.0 <= x <= n - 1.0 else 0.0
    x = min(max(x, 0.0), n - 1.0)
    i = min(int(math.floor(x)), max(n - 2, 0))
    return i, x - i, inside, 1.0, 1.0 if n > 1 else 0.0


@njit(cache=True, nogil=True, inline="always")
def _clamp(i: int, n: int) -> int:
    return min(max(i, 0), n - 1)


@njit(cache=True, nogil=True, inline="always")
def _corners(coords, cb, p, D, H, W, zeros):
    """The 8 neighbours of point ``p`` (clamped indices per axis) and the trilinear weights per axis (zero for a
    neighbour outside the grid under zero padding)."""
    i, fz, _, vz0, vz1 = _axis(coords[cb, 0, p] * (D - 1), D, zeros)
    j, fy, _, vy0, vy1 = _axis(coords[cb, 1, p] * (H - 1), H, zeros)
    k, fx, _, vx0, vx1 = _axis(coords[cb, 2, p] * (W - 1), W, zeros)
    return (
        _clamp(i, D),
        _clamp(i + 1, D),
        _clamp(j, H),
        _clamp(j + 1, H),
        _clamp(k, W),
        _clamp(k + 1, W),
        (1.0 - fz) * vz0,
        fz * vz1,
        (1.0 - fy) * vy0,
        fy * vy1,
        (1.0 - fx) * vx0,
        fx * vx1,
    )


@njit(cache=True, nogil=True)
def _forward(image, coords, out, zeros):
    B, C, D, H, W = image.shape
    shared = coords.shape[0] == 1
    for b in range(B):
        cb = 0 if shared else b
        for p in range(coords.shape[2]):
            i0, i1, j0, j1, k0, k1, az0, az1, ay0, ay1, ax0, ax1 = _corners(coords, cb, p, D, H, W, zeros)
            for c in range(C):
                v = image[b, c]
                out[b, c, p] = az0 * (
                    ay0 * (ax0 * v[i0, j0, k0] + ax1 * v[i0, j0, k1])
                    + ay1 * (ax0 * v[i0, j1, k0] + ax1 * v[i0, j1, k1])
                ) + az1 * (
                    ay0 * (ax0 * v[i1, j0, k0] + ax1 * v[i1, j0, k1])
                    + ay1 * (ax0 * v[i1, j1, k0] + ax1 * v[i1, j1, k1])
                )


@njit(cache=True, nogil=True)
def _image_gradient(coords, grad, out, zeros):
    """``out`` (zeros, shaped as the image) += the gradient of the sampled values with respect to the image."""
    B, C, D, H, W = out.shape
    shared = coords.shape[0] == 1
    for b in range(B):
        cb = 0 if shared else b
        for p in range(coords.shape[2]):
            i0, i1, j0, j1, k0, k1, az0, az1, ay0, ay1, ax0, ax1 = _corners(coords, cb, p, D, H, W, zeros)
            for c in range(C):
                g = out[b, c]
                a0, a1 = az0 * grad[b, c, p], az1 * grad[b, c, p]
                g[i0, j0, k0] += a0 * ay0 * ax0
                g[i0, j0, k1] += a0 * ay0 * ax1
                g[i0, j1, k0] += a0 * ay1 * ax0
                g[i0, j1, k1] += a0 * ay1 * ax1
                g[i1, j0, k0] += a1 * ay0 * ax0
                g[i1, j0, k1] += a1 * ay0 * ax1
                g[i1, j1, k0] += a1 * ay1 * ax0
                g[i1, j1, k1] += a1 * ay1 * ax1


@njit(cache=True, nogil=True)
def _coordinate_gradient(image, coords, grad, out, image_out, with_image, zeros):
    """``out`` (B, 3, P) = the gradient of the sampled values with respect to the [0,1] coordinates; with
    ``with_image`` also ``image_out`` (zeros, shaped as the image) += the gradient with respect to the image, in the
    same pass."""
    B, C, D, H, W = image.shape
    shared = coords.shape[0] == 1
    for b in range(B):
        cb = 0 if shared else b
        for p in range(coords.shape[2]):
            i, fz, iz, vz0, vz1 = _axis(coords[cb, 0, p] * (D - 1), D, zeros)
            j, fy, iy, vy0, vy1 = _axis(coords[cb, 1, p] * (H - 1), H, zeros)
            k, fx, ix, vx0, vx1 = _axis(coords[cb, 2, p] * (W - 1), W, zeros)
            gz0, gy0, gx0 = 1.0 - fz, 1.0 - fy, 1.0 - fx
            az0, az1, ay0, ay1, ax0, ax1 = gz0 * vz0, fz * vz1, gy0 * vy0, fy * vy1, gx0 * vx0, fx * vx1
            i0, i1, j0, j1 = _clamp(i, D), _clamp(i + 1, D), _clamp(j, H), _clamp(j + 1, H)
            k0, k1 = _clamp(k, W), _clamp(k + 1, W)
            dz = dy = dx = 0.0
            for c in range(C):
                v, g = image[b, c], grad[b, c, p]
                c000 = v[i0, j0, k0] * (vz0 * vy0 * vx0)
                c001 = v[i0, j0, k1] * (vz0 * vy0 * vx1)
                c010 = v[i0, j1, k0] * (vz0 * vy1 * vx0)
                c011 = v[i0, j1, k1] * (vz0 * vy1 * vx1)
                c100 = v[i1, j0, k0] * (vz1 * vy0 * vx0)
                c101 = v[i1, j0, k1] * (vz1 * vy0 * vx1)
                c110 = v[i1, j1, k0] * (vz1 * vy1 * vx0)
                c111 = v[i1, j1, k1] * (vz1 * vy1 * vx1)
                dz += g * (
                    gy0 * (gx0 * (c100 - c000) + fx * (c101 - c001)) + fy * (gx0 * (c110 - c010) + fx * (c111 - c011))
                )
                dy += g * (
                    gz0 * (gx0 * (c010 - c000) + fx * (c011 - c001)) + fz * (gx0 * (c110 - c100) + fx * (c111 - c101))
                )
                dx += g * (
                    gz0 * (gy0 * (c001 - c000) + fy * (c011 - c010)) + fz * (gy0 * (c101 - c100) + fy * (c111 - c110))
                )
                if with_image:
                    o = image_out[b, c]
                    a0, a1 = az0 * g, az1 * g
                    o[i0, j0, k0] += a0 * ay0 * ax0
                    o[i0, j0, k1] += a0 * ay0 * ax1
                    o[i0, j1, k0] += a0 * ay1 * ax0
                    o[i0, j1, k1] += a0 * ay1 * ax1
                    o[i1, j0, k0] += a1 * ay0 * ax0
                    o[i1, j0, k1] += a1 * ay0 * ax1
                    o[i1, j1, k0] += a1 * ay1 * ax0
                    o[i1, j1, k1] += a1 * ay1 * ax1
            out[b, 0, p] = dz * (D - 1) * iz
            out[b, 1, p] = dy * (H - 1) * iy
            out[b, 2, p] = dx * (W - 1) * ix


class _Trilinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, image: torch.Tensor, coords: torch.Tensor, zeros: bool) -> torch.Tensor:
        batch, channels = image.shape[:2]
        image_c = image.detach().contiguous()
        flat = coords.detach().to(image.dtype).reshape(coords.shape[0], 3, -1).contiguous()
        out = torch.empty((batch, channels, flat.shape[2]), dtype=image.dtype)
        _forward(image_c.numpy(), flat.numpy(), out.numpy(), zeros)
        ctx.save_for_backward(image_c, flat)
        ctx.zeros, ctx.coords_shape, ctx.coords_dtype = zeros, coords.shape, coords.dtype
        return out.view(batch, channels, *coords.shape[2:])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        image, flat = ctx.saved_tensors
        grad = grad.contiguous().view(image.shape[0], image.shape[1], -1)
        want_image, want_coords = ctx.needs_input_grad[:2]
        grad_image = torch.zeros_like(image) if want_image else None
        grad_coords = None
        if want_coords:
            out = torch.empty((image.shape[0], 3, flat.shape[2]), dtype=image.dtype)
            into = grad_image if want_image else image[:1, :1, :1, :1, :1]  # unused without the image's gradient
            _coordinate_gradient(
                image.numpy(), flat.numpy(), grad.numpy(), out.numpy(), into.numpy(), want_image, ctx.zeros
            )
            if ctx.coords_shape[0] == 1 and image.shape[0] > 1:
                out = out.sum(0, keepdim=True)
            grad_coords = out.view(ctx.coords_shape).to(ctx.coords_dtype)
        elif want_image:
            _image_gradient(flat.numpy(), grad.numpy(), grad_image.numpy(), ctx.zeros)
        return grad_image, grad_coords, None


def supports(image: torch.Tensor, coordinates: torch.Tensor) -> bool:
    """Whether :func:`sample` handles these tensors: 3-D float32/float64 CPU tensors."""
    return (
        image.device.type == "cpu"
        and coordinates.device.type == "cpu"
        and image.dim() == 5
        and coordinates.shape[1] == 3
        and image.dtype in (torch.float32, torch.float64)
    )


def sample(image: torch.Tensor, coordinates: torch.Tensor, padding: str = "border") -> torch.Tensor:
    """``image`` (B, C, D, H, W) sampled trilinearly at ``coordinates`` (B or 1, 3, *points) in [0,1] units:
    ``(B, C, *points)``; ``padding`` is ``"border"`` or ``"zeros"`` (see the module docstring).

    Raises:
        ValueError: the tensors are not 3-D CPU float tensors (:func:`supports`), the batch sizes differ, or the
            padding is unknown.
    """
    if not supports(image, coordinates):
        raise ValueError(
            f"trilinear.sample takes CPU float tensors (B, C, D, H, W) and (B, 3, ...), got {tuple(image.shape)} "
            f"{image.dtype} on {image.device} and {tuple(coordinates.shape)} on {coordinates.device}"
        )
    if coordinates.shape[0] not in (1, image.shape[0]):
        raise ValueError(f"batch sizes differ: image {image.shape[0]}, coordinates {coordinates.shape[0]}")
    if padding not in ("border", "zeros"):
        raise ValueError(f"unknown padding {padding!r}; choose border or zeros")
    return _Trilinear.apply(image, coordinates, padding == "zeros")
