"""Registration metrics: Dice, mTRE and the share of folded voxels.

Conventions:

* Label maps are integer arrays/tensors; 0 is background and never scored.  ``dice`` scores the labels present in
  either image (or those passed in ``labels``); a label absent from both is skipped, one present in only one scores 0.
* Landmarks are ``(K, 3)`` arrays of **voxel indices** in array-axis order (axis 0 first), 0-based.  ``mtre``
  converts them to mm with the per-axis ``spacing`` (same axis order), so anisotropic voxels count correctly.
* % negative Jacobian:
  - a fold is det < 0 (:func:`mgicon.vocabulary.is_fold`; det = 0 is not one);
  - ``negative_jacobian_percent(phi)`` — upstream's convention: a map ``(B, 3, *grid)`` in [0,1] coordinates on the
    network grid; the determinant of the forward-difference cell Jacobian (a cross product of the three edges at
    each cell's far corner) on the ``(N−1)³`` cells; the share of cells with det < 0, in percent.  Scale-free.
  - ``negative_jacobian_percent_physical(displacement, spacing)`` — a displacement field ``(3, *grid)`` or
    ``(*grid, 3)`` **in mm** on a grid with ``spacing`` mm (array-axis order, components in the same order): the
    determinant of ``I + ∇u`` with central differences (one-sided at the border); the share of voxels with
    det < 0, in percent.  For rotated grids pass the direction matrix: ITK's
    ``DisplacementFieldJacobianDeterminantFilter`` ignores it and is wrong for non-identity directions.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from mgicon.vocabulary import is_fold


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def dice(fixed_labels, warped_labels, labels: Iterable[int] | None = None) -> dict[int, float]:
    """Dice ``2|X∩Y| / (|X|+|Y|)`` per label of two label maps of equal shape (background 0 excluded)."""
    a = _as_numpy(fixed_labels)
    b = _as_numpy(warped_labels)
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: {a.shape} vs {b.shape}")
    if labels is None:
        labels = np.union1d(np.unique(a), np.unique(b))
    scores: dict[int, float] = {}
    for label in labels:
        label = int(label)
        if label == 0:
            continue
        x = a == label
        y = b == label
        size = int(x.sum()) + int(y.sum())
        if size == 0:
            continue
        scores[label] = 2.0 * float(np.logical_and(x, y).sum()) / size
    return scores


def mean_dice(fixed_labels, warped_labels, labels: Iterable[int] | None = None) -> float:
    """Mean of :func:`dice` over the scored labels (NaN if there is none)."""
    scores = dice(fixed_labels, warped_labels, labels)
    return float(np.mean(list(scores.values()))) if scores else float("nan")


def tre(fixed_points, moving_points, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Per-landmark target registration error in mm: ``‖(p − q) · spacing‖₂`` for voxel-index landmarks."""
    p = _as_numpy(fixed_points).astype(np.float64)
    q = _as_numpy(moving_points).astype(np.float64)
    if p.shape != q.shape or p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"landmarks must be two (K, 3) arrays of equal shape, got {p.shape} and {q.shape}")
    s = np.asarray(spacing, dtype=np.float64).reshape(1, 3)
    return np.linalg.norm((p - q) * s, axis=1)


def mtre(fixed_points, moving_points, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """Mean target registration error in mm (see :func:`tre`)."""
    return float(tre(fixed_points, moving_points, spacing).mean())


def jacobian_determinant_grid(phi: torch.Tensor) -> torch.Tensor:
    """Cell Jacobian determinants ``(B, N0−1, N1−1, N2−1)`` of a map ``(B, 3, N0, N1, N2)`` (upstream's stencil)."""
    if phi.dim() != 5 or phi.shape[1] != 3:
        raise ValueError(f"expected a map of shape (B, 3, D, H, W), got {tuple(phi.shape)}")
    phi = phi.detach()
    corner = phi[:, :, 1:, 1:, 1:]
    a = corner - phi[:, :, :-1, 1:, 1:]
    b = corner - phi[:, :, 1:, :-1, 1:]
    c = corner - phi[:, :, 1:, 1:, :-1]
    (a0, a1, a2), (b0, b1, b2), (c0, c1, c2) = a.unbind(1), b.unbind(1), c.unbind(1)
    return (a1 * b2 - a2 * b1) * c0 + (a2 * b0 - a0 * b2) * c1 + (a0 * b1 - a1 * b0) * c2  # (a × b) · c


def negative_jacobian_percent(phi: torch.Tensor) -> float:
    """% of network-grid cells whose Jacobian determinant is negative (upstream's ``flips`` as a percentage)."""
    det = jacobian_determinant_grid(phi)
    return float(is_fold(det).float().mean().item() * 100.0)


def jacobian_determinant_physical(
    displacement, spacing: Sequence[float] = (1.0, 1.0, 1.0), direction=None
) -> np.ndarray:
    """``det(I + ∇u)`` per voxel of a displacement field in mm, ``(3, *grid)`` or ``(*grid, 3)``.

    ``spacing[k]`` is the voxel size along grid axis k.  Without ``direction`` the components of ``u`` follow the
    grid axes.  With it, ``u`` has physical components and column k of ``direction`` is the physical direction of
    grid axis k (for an ITK array ``[z, y, x]``: ITK's direction matrix with its columns reversed), so that the
    gradient is taken in physical space: ``∇u = G · directionᵀ`` with ``G`` the derivatives along the grid axes.
    Derivatives are central inside and one-sided at the border (exact for affine fields).
    """
    u = _as_numpy(displacement).astype(np.float64)
    if u.ndim != 4:
        raise ValueError(f"expected a 3-D displacement field with 3 components, got shape {u.shape}")
    if u.shape[0] != 3 and u.shape[-1] == 3:
        u = np.moveaxis(u, -1, 0)
    if u.shape[0] != 3:
        raise ValueError(f"expected 3 displacement components, got shape {u.shape}")
    grad = np.empty(u.shape[1:] + (3, 3))
    for i in range(3):
        for k, g in enumerate(np.gradient(u[i], *[float(s) for s in spacing], edge_order=1)):
            grad[..., i, k] = g
    if direction is not None:
        grad = grad @ np.asarray(direction, dtype=np.float64).reshape(3, 3).T
    m = grad + np.eye(3)
    return (  # the 3×3 determinant by cofactors: the value np.linalg.det gives, without its per-matrix LU
        m[..., 0, 0] * (m[..., 1, 1] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 1])
        - m[..., 0, 1] * (m[..., 1, 0] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 0])
        + m[..., 0, 2] * (m[..., 1, 0] * m[..., 2, 1] - m[..., 1, 1] * m[..., 2, 0])
    )


def negative_jacobian_percent_physical(
    displacement, spacing: Sequence[float] = (1.0, 1.0, 1.0), direction=None
) -> float:
    """% of voxels where the physical-space transform folds (``det(I + ∇u) < 0``)."""
    det = jacobian_determinant_physical(displacement, spacing, direction)
    return float(is_fold(det).mean() * 100.0)
