"""Scores of one registration at the original resolution: Dice, mTRE and % negative Jacobian.

A registration is a transform ``T`` mapping *fixed* physical points to *moving* physical points (mm, ITK/LPS;
:mod:`mgicon.io.itk`), whatever produced it (a network map, SyN, the synthetic ground truth, the identity).

* **Dice**: the moving label map resampled onto the fixed label map's grid through ``T`` (nearest neighbour, as
  the Learn2Reg evaluation does), against the fixed labels, averaged over the dataset's labels (default: every
  non-zero label of either map).  A fraction in [0, 1].
* **mTRE**: mean over corresponding landmarks of ``‖T(x_fixed) − x_moving‖`` in mm.
* **% J<0**: percent of the fixed image's voxels where ``det(I + ∇u)`` of the physical displacement ``u = T − id``
  is negative (gradients in physical space, so rotated and anisotropic images are scored correctly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mgicon import metrics
from mgicon.data.manifest import read_landmarks
from mgicon.io import itk as itkio
from mgicon.records import ScanRecord
from mgicon.vocabulary import is_fold


@dataclass(frozen=True)
class Scores:
    """The scores of one registered pair (``None``: not available for this pair)."""

    dice: float | None
    mtre: float | None
    negative_jacobian_percent: float | None


def pair_dice(transform, fixed_label: str, moving_label: str, labels: Sequence[int] | None = None) -> float:
    """Mean Dice of the moving labels warped onto the fixed labels through ``transform``."""
    fixed = itkio.read_image(fixed_label, what="label map")
    moving = itkio.read_image(moving_label, what="label map")
    warped = itkio.warp_image(moving, transform, fixed, nearest=True)
    return metrics.mean_dice(itkio.to_array(fixed), itkio.to_array(warped), labels)


def pair_mtre(transform, fixed_landmarks: str, moving_landmarks: str) -> float:
    """Mean distance (mm) between the fixed landmarks carried into the moving image and the moving landmarks."""
    fixed = read_landmarks(fixed_landmarks)
    moving = read_landmarks(moving_landmarks)
    if fixed.shape != moving.shape or len(fixed) == 0:
        raise ValueError(
            f"{fixed_landmarks}, {moving_landmarks}: landmark counts differ ({len(fixed)} vs {len(moving)}) or are zero"
        )
    mapped = itkio.transform_points(transform, fixed)
    return float(np.linalg.norm(mapped - moving, axis=1).mean())


def pair_negative_jacobian(transform, fixed_image) -> float:
    """Percent of the fixed grid's voxels where the transform folds (:func:`~mgicon.vocabulary.is_fold`)."""
    det = itkio.to_array(itkio.jacobian_determinant(itkio.displacement_field(transform, fixed_image)))
    return 100.0 * float(is_fold(det).mean())


def score(
    transform,
    fixed: ScanRecord,
    moving: ScanRecord,
    fixed_image=None,
    labels: Sequence[int] | None = None,
    folds: bool = True,
) -> Scores:
    """Every score the scans allow: Dice when both have label maps, mTRE when both have landmarks, and (unless not
    ``folds``) the fold percentage on the fixed image's grid (``fixed_image``, read from ``fixed.image`` if not
    given)."""
    dice = mtre = None
    if fixed.label and moving.label:
        dice = pair_dice(transform, fixed.label, moving.label, labels)
    if fixed.landmarks and moving.landmarks:
        mtre = pair_mtre(transform, fixed.landmarks, moving.landmarks)
    if not folds:
        return Scores(dice, mtre, None)
    if fixed_image is None:
        fixed_image = itkio.read_image(fixed.image)
    return Scores(dice, mtre, pair_negative_jacobian(transform, fixed_image))
