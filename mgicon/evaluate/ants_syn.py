"""The SyN baseline of the paper: "ANTsPy SyN with mutual information and default parameters".

``syn_register(moving, fixed)`` runs ``ants.registration(fixed, moving, "SyN")`` with ANTsPy's defaults (an
affine stage, then SyN; both with Mattes mutual information, which already is ANTsPy's default for "SyN" —
``aff_metric="mattes"``, ``syn_metric="mattes"`` — and is passed explicitly so that a change of ANTsPy's
defaults cannot silently change the baseline) and returns the result as one SimpleITK transform.

Conventions: the transform maps **fixed** physical points to **moving** physical points (ITK/LPS, as every
registration in :mod:`mgicon.io.itk`); it is held in memory (no temporary file survives the call).  All ANTs
calls go through :mod:`mgicon.io.ants`.

Determinism: ANTs samples the affine metric at random points and sums metric terms across threads in a
scheduling-dependent order, so only a seeded, single-threaded run is repeatable (same seed ⇒ identical
displacement fields).  ANTs' ITK fixes its thread count once per process, so ``deterministic=True`` (and any
``threads``) runs in a fresh worker process with that count — unless this process's ANTs already uses it
(``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` set before :mod:`mgicon.io.ants` was imported), which saves the
worker's start-up (~3 s).  The caller's environment is never modified.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from mgicon.config import syn_threads
from mgicon.io import ants as antsio
from mgicon.io.itk import to_array

METRIC = "mattes"  # Mattes mutual information, ANTsPy's default for both stages of "SyN"


@dataclass(frozen=True)
class SynResult:
    """A SyN registration: ``transform`` (fixed → moving points) and the ``seconds`` the ``ants.registration``
    call took (image conversion and worker start-up excluded, so timings compare with other methods)."""

    transform: sitk.Transform
    seconds: float


def _check_image(image: Any, what: str) -> None:
    """Refuse, in one line, what ANTs cannot register or would register meaninglessly."""
    if not isinstance(image, sitk.Image):
        raise ValueError(f"SyN: {what} must be a SimpleITK image, got {type(image).__name__}")
    if image.GetDimension() != 3:
        raise ValueError(f"SyN: {what} is {image.GetDimension()}-D (size {image.GetSize()}); need a 3-D image")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"SyN: {what} has {image.GetNumberOfComponentsPerPixel()} components per voxel; need 1")
    if min(image.GetSize()) < 1 or image.GetNumberOfPixels() == 0:
        raise ValueError(f"SyN: {what} is empty (size {image.GetSize()})")
    array = to_array(image)
    if not np.isfinite(array).all():
        raise ValueError(f"SyN: {what} has non-finite (NaN/inf) voxels")
    if array.min() == array.max():
        raise ValueError(f"SyN: {what} is constant ({array.flat[0]}); nothing to register")


def _thread_count(deterministic: bool, seed: int | None, threads: int | None) -> int | None:
    """The ITK thread count the run needs (:func:`mgicon.config.syn_threads`; None: whatever this process's ANTs
    uses)."""
    if threads is not None and (not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or threads < 1):
        raise ValueError(f"SyN: threads must be a positive integer or None, got {threads!r}")
    if deterministic:
        if seed is None:
            raise ValueError("SyN: deterministic=True needs an integer seed, got seed=None")
        if threads not in (None, 1):
            raise ValueError(
                f"SyN: deterministic=True runs single-threaded; threads={threads} needs deterministic=False"
            )
    wanted = syn_threads(deterministic, threads)
    return None if wanted is None else int(wanted)


def syn_register(
    moving: sitk.Image,
    fixed: sitk.Image,
    *,
    seed: int | None = 0,
    deterministic: bool = True,
    threads: int | None = None,
    type_of_transform: str = "SyN",
    **kwargs: Any,
) -> SynResult:
    """Register ``moving`` to ``fixed`` with ANTsPy SyN (mutual information, otherwise ANTsPy's defaults).

    ``seed`` seeds ANTs' metric sampling (None: ANTs' clock-seeded default); ``deterministic`` also runs ITK
    single-threaded so that the same seed gives the same result; ``threads`` (only without ``deterministic``)
    sets ITK's thread count, None leaves ANTs' default (all cores).  ``kwargs`` go to ``ants.registration``
    (e.g. ``reg_iterations``; SimpleITK ``mask``/``moving_mask`` images are converted); they override the
    explicit ``aff_metric``/``syn_metric``.
    """
    _check_image(moving, "moving image")
    _check_image(fixed, "fixed image")
    if "outprefix" in kwargs:
        raise ValueError("SyN: outprefix is managed by syn_register (transforms are returned in memory)")
    wanted = _thread_count(deterministic, seed, threads)
    options = {"aff_metric": METRIC, "syn_metric": METRIC, **kwargs}
    with tempfile.TemporaryDirectory(prefix="mgicon-syn-") as tmp:
        outprefix = str(Path(tmp) / "syn_")
        if wanted is None or wanted == antsio.itk_threads():
            run = antsio.register(moving, fixed, outprefix, type_of_transform=type_of_transform, seed=seed, **options)
        else:
            run = antsio.register_in_worker(
                moving, fixed, outprefix, threads=wanted, type_of_transform=type_of_transform, seed=seed, **options
            )
        transform = antsio.transform_from_ants(run.fwdtransforms)  # read into memory before tmp goes
    return SynResult(transform, run.seconds)
