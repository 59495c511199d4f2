"""All ANTsPy use of mgicon: images and registration transforms between ANTs and SimpleITK, and running
``ants.registration`` (in this process or in a fresh worker process with a fixed ITK thread count).

This is the only module that imports :mod:`ants`, so the optional ANTs dependency stays in one place.

Conventions (stated once; every function below follows them):

* ANTs and SimpleITK both use ITK physical space (LPS, mm) with the same origin, spacing and direction, so a
  conversion copies the geometry unchanged.  Only the voxel array differs: ANTs' numpy arrays are indexed
  **[x, y, z]**, SimpleITK's (:func:`mgicon.io.itk.to_array`) **[z, y, x]**, so the array is transposed.
* A registration transform maps **fixed** physical points to **moving** physical points (ITK resampling
  convention, as in :mod:`mgicon.io.itk`).  ``ants.registration(...)["fwdtransforms"]`` lists such transforms
  in ``antsApplyTransforms -t`` order: the **first** file is applied to a fixed point **first** (for SyN:
  ``[warp, affine]`` ⇒ ``T(p) = affine(warp(p))``; the moving image is moved by the affine, then by the warp).
  A SimpleITK :class:`~SimpleITK.CompositeTransform` applies its **last** added transform first, so the files
  are added in reverse list order.  (Checked by ``tests/test_ants_syn.py``: resampling through the result equals
  ``ants.apply_transforms``; the opposite order does not.)
* Threads: the ITK inside ANTsPy reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` once per process, when ANTs first
  creates an ITK object; changing the variable later has no effect (measured).  With several threads ANTs'
  metric sums depend on scheduling, so even a seeded SyN differs between runs; with one thread and a seed it is
  bitwise repeatable (measured).  Importing this module fixes the thread count at once, so
  :func:`itk_threads` knows it; :func:`register_in_worker` runs a registration in a fresh process to get another.
* Seeds: ANTs treats ``--random-seed 0`` as "no seed" (clock-seeded sampling), so seed ``s ≥ 0`` is passed to
  ANTs as ``s + 1``.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import SimpleITK as sitk

_ANTS_WAS_LOADED = "ants" in sys.modules
import ants  # noqa: E402  (after the check above)

_THREAD_VARIABLE = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"
_THREAD_LIST_VARIABLE = "ITK_NUMBER_OF_THREADS_ENV_LIST"  # which variables ITK reads, ':'-separated
_MAX_SEED = 2**31 - 2  # ANTs parses the seed as a C int, and adds nothing; we add 1


def _requested_threads(environ: Mapping[str, str]) -> int | None:
    """The thread count ITK takes from ``environ`` (the last variable of its list that is set wins), or None
    when none is set (ITK then uses the machine's cores) or the value is not a positive integer."""
    names = environ.get(_THREAD_LIST_VARIABLE, "NSLOTS:" + _THREAD_VARIABLE).split(":")
    value = None
    for name in names:
        if name and name in environ:
            value = environ[name]
    try:
        count = int(value) if value is not None else None
    except ValueError:
        return None
    return count if count is not None and count >= 1 else None


# Fix ANTs' ITK thread count now (its first ITK object reads the environment), so that it is known.
_ITK_THREADS: int | None = None if _ANTS_WAS_LOADED else _requested_threads(os.environ)
ants.from_numpy(np.zeros((2, 2, 2), np.float32))


def itk_threads() -> int | None:
    """The ITK thread count ANTs uses in this process, when known: the value of ``ITK_GLOBAL_DEFAULT_NUMBER_OF_
    THREADS`` when this module was imported (None if unset, or if ``ants`` was imported before this module)."""
    return _ITK_THREADS


# the pixel types ANTsPy images hold: uint8, uint32 and float32 (ants.from_numpy stores float64 as float32 too)
_ANTS_DTYPES = {np.dtype(np.uint8): np.uint8, np.dtype(np.uint16): np.uint32, np.dtype(np.uint32): np.uint32}


def to_ants(image: sitk.Image) -> "ants.ANTsImage":
    """A 3-D scalar SimpleITK image as an ANTs image with the same geometry.  Values are kept exactly for
    uint8, uint16/uint32 (as uint32), float32 and other integers up to 2²⁴; anything else becomes float32,
    the only floating type of ANTsPy images."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"to_ants: need a scalar image, got {image.GetNumberOfComponentsPerPixel()} components")
    if image.GetDimension() != 3:
        raise ValueError(f"to_ants: need a 3-D image, got {image.GetDimension()}-D with size {image.GetSize()}")
    array = sitk.GetArrayFromImage(image)  # [z, y, x]
    dtype = _ANTS_DTYPES.get(array.dtype, np.float32)
    array = np.ascontiguousarray(array.transpose(2, 1, 0), dtype=dtype)  # [x, y, z]
    return ants.from_numpy(
        array,
        origin=list(image.GetOrigin()),
        spacing=list(image.GetSpacing()),
        direction=np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3),
    )


def from_ants(image: "ants.ANTsImage") -> sitk.Image:
    """An ANTs 3-D scalar image as a SimpleITK image with the same geometry, values and pixel type."""
    if image.dimension != 3 or image.components != 1:
        raise ValueError(
            f"from_ants: need a 3-D scalar image, got {image.dimension}-D with {image.components} components"
        )
    out = sitk.GetImageFromArray(np.ascontiguousarray(image.numpy().transpose(2, 1, 0)))
    out.SetOrigin(tuple(float(v) for v in image.origin))
    out.SetSpacing(tuple(float(v) for v in image.spacing))
    out.SetDirection(tuple(float(v) for v in np.asarray(image.direction).flatten()))
    return out


def _affine_from_file(path: str) -> sitk.AffineTransform:
    """An ANTs ``*GenericAffine.mat`` (ITK MatrixOffsetTransformBase, float) as a SimpleITK affine in double."""
    tx = ants.read_transform(path)
    if tx.dimension != 3:
        raise ValueError(f"{path}: {tx.dimension}-D transform; need 3-D")
    params = np.asarray(tx.parameters, dtype=np.float64)  # 9 matrix entries (row-major), then 3 translation
    centre = np.asarray(tx.fixed_parameters, dtype=np.float64)
    if params.size != 12 or centre.size != 3:
        raise ValueError(f"{path}: not a 3-D affine transform ({tx.transform_type})")
    affine = sitk.AffineTransform(3)
    affine.SetCenter(centre.tolist())
    affine.SetMatrix(params[:9].tolist())
    affine.SetTranslation(params[9:].tolist())
    return affine


def _field_from_file(path: str) -> sitk.DisplacementFieldTransform:
    """An ANTs displacement field (``*Warp.nii.gz``; ITK/LPS vectors in mm) read fully into memory."""
    field = sitk.ReadImage(path)
    if field.GetDimension() != 3 or field.GetNumberOfComponentsPerPixel() != 3:
        raise ValueError(
            f"{path}: not a 3-D displacement field (dimension {field.GetDimension()}, "
            f"{field.GetNumberOfComponentsPerPixel()} components)"
        )
    return sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))


def transform_from_ants(fwdtransforms: Sequence[str] | str) -> sitk.Transform:
    """``ants.registration(...)["fwdtransforms"]`` (affine ``.mat`` files and displacement ``.nii.gz`` fields,
    in ``antsApplyTransforms`` order) as one SimpleITK transform mapping fixed points to moving points.  Fields
    are loaded into memory, so the files may be deleted afterwards."""
    if isinstance(fwdtransforms, (str, os.PathLike)):
        fwdtransforms = [os.fspath(fwdtransforms)]
    if not fwdtransforms:
        raise ValueError("transform_from_ants: empty transform list")
    composite = sitk.CompositeTransform(3)
    for path in reversed([os.fspath(p) for p in fwdtransforms]):  # SimpleITK applies the last added first
        if path.endswith(".mat"):
            composite.AddTransform(_affine_from_file(path))
        elif path.endswith((".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")):
            composite.AddTransform(_field_from_file(path))
        else:
            raise ValueError(f"transform_from_ants: unsupported transform file {path} (need .mat or a field image)")
    return composite


def apply_transforms(
    moving: sitk.Image, fixed: sitk.Image, fwdtransforms: Sequence[str], interpolator: str = "linear"
) -> sitk.Image:
    """``moving`` resampled on ``fixed``'s grid by ``ants.apply_transforms`` (ANTs' own resampling; used to check
    :func:`transform_from_ants`)."""
    warped = ants.apply_transforms(to_ants(fixed), to_ants(moving), list(fwdtransforms), interpolator=interpolator)
    return from_ants(warped)


# ------------------------------------------------------------------------------------------ registration


class AntsRun(NamedTuple):
    """The files of one ``ants.registration`` (``fwdtransforms``, see the module conventions) and the seconds
    its call took (conversions and process start-up excluded)."""

    fwdtransforms: list[str]
    seconds: float


def _ants_seed(seed: int | None) -> int | None:
    if seed is None:
        return None
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= int(seed) <= _MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, {_MAX_SEED}] or None, got {seed!r}")
    return int(seed) + 1


def register(
    moving: sitk.Image,
    fixed: sitk.Image,
    outprefix: str | os.PathLike,
    *,
    type_of_transform: str = "SyN",
    seed: int | None = None,
    **kwargs: Any,
) -> AntsRun:
    """``ants.registration(fixed, moving, type_of_transform, outprefix=..., **kwargs)`` in this process, with
    ANTs' ``--random-seed`` from ``seed`` (None: ANTs' clock-seeded default).  SimpleITK images among
    ``kwargs`` (``mask``, ``moving_mask``) are converted.  Transform files are written under ``outprefix``."""
    ants_seed = _ants_seed(seed)
    args = {k: to_ants(v) if isinstance(v, sitk.Image) else v for k, v in kwargs.items()}
    fixed_a, moving_a = to_ants(fixed), to_ants(moving)
    previous = ants.config._random_seed  # ANTsPy's only route to --random-seed; restored below
    ants.config._random_seed = ants_seed
    try:
        start = time.perf_counter()
        out = ants.registration(
            fixed_a, moving_a, type_of_transform=type_of_transform, outprefix=os.fspath(outprefix), **args
        )
        seconds = time.perf_counter() - start
    finally:
        ants.config._random_seed = previous
    files = out["fwdtransforms"]
    return AntsRun([files] if isinstance(files, str) else list(files), seconds)


def register_affine(
    moving: sitk.Image,
    fixed: sitk.Image,
    *,
    seed: int | None = None,
    initial: sitk.Transform | None = None,
    **options: Any,
) -> sitk.AffineTransform:
    """An ANTs affine registration (``type_of_transform="Affine"``) of ``moving`` to ``fixed``: the affine mapping
    fixed physical points to moving ones.  ``options`` are ``ants.registration``'s (``aff_metric``,
    ``aff_iterations``, ...; ANTs' defaults where not given: Mattes mutual information, 4 levels); ``initial``
    (fixed → moving points) is where ANTs starts (default: the images' centres of mass) and is part of the
    result.  Its files live in a temporary folder only."""
    import tempfile

    cast = [sitk.Cast(image, sitk.sitkFloat32) for image in (moving, fixed)]
    with tempfile.TemporaryDirectory(prefix="mgicon-affine-") as folder:
        if initial is not None:
            start = os.path.join(folder, "initial.mat")
            sitk.WriteTransform(initial, start)
            options["initial_transform"] = [start]
        run = register(*cast, os.path.join(folder, "affine_"), type_of_transform="Affine", seed=seed, **options)
        if len(run.fwdtransforms) != 1 or not run.fwdtransforms[0].endswith(".mat"):
            raise RuntimeError(f"ANTs affine registration wrote {run.fwdtransforms}, expected one .mat file")
        return _affine_from_file(run.fwdtransforms[0])


# The worker's program.  First it ties its life to its parent's (Linux: PR_SET_PDEATHSIG = SIGKILL, so that a
# parent killed by any signal takes the worker with it; if the parent is already gone, it exits at once), then it
# loads this file under another name (importing the mgicon package, and torch, would only cost start-up time) and
# runs the job.  argv: this file, the job pickle, the parent's pid.
_WORKER_CODE = """
import ctypes, os, signal, sys
if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[3]):
    sys.exit("mgicon ANTs worker: parent process is gone")
import importlib.util
spec = importlib.util.spec_from_file_location("_mgicon_ants_worker", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module._worker(sys.argv[2])
"""


def register_in_worker(
    moving: sitk.Image,
    fixed: sitk.Image,
    outprefix: str | os.PathLike,
    *,
    threads: int,
    type_of_transform: str = "SyN",
    seed: int | None = None,
    **kwargs: Any,
) -> AntsRun:
    """:func:`register` in a fresh Python process whose ANTs uses exactly ``threads`` ITK threads (the only way
    to choose them once ANTs has started in this process).  Inputs travel as a pickle beside ``outprefix``
    (``kwargs`` must pickle; SimpleITK images do).  This process's environment is not changed."""
    if not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    _ants_seed(seed)  # fail here, not in the worker
    prefix = Path(outprefix)
    job, result = prefix.with_name(prefix.name + "job.pkl"), prefix.with_name(prefix.name + "result.json")
    with open(job, "wb") as fh:
        pickle.dump(
            {
                "moving": moving,
                "fixed": fixed,
                "outprefix": os.fspath(prefix),
                "result": os.fspath(result),
                "type_of_transform": type_of_transform,
                "seed": seed,
                "kwargs": kwargs,
            },
            fh,
        )
    env = dict(os.environ)
    env[_THREAD_VARIABLE] = str(int(threads))
    env[_THREAD_LIST_VARIABLE] = _THREAD_VARIABLE
    # subprocess.run kills the worker when this process gets an exception (KeyboardInterrupt, a SIGTERM handler's
    # exception); _WORKER_CODE makes it die with this process when this one is killed outright
    proc = subprocess.run(
        [sys.executable, "-c", _WORKER_CODE, os.path.abspath(__file__), os.fspath(job), str(os.getpid())],
        env=env,
        cwd=prefix.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if proc.returncode != 0 or not result.is_file():
        lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
        raise RuntimeError(
            f"ANTs registration worker failed (exit {proc.returncode}): {lines[-1] if lines else 'no output'}"
        )
    data = json.loads(result.read_text(encoding="utf-8"))
    return AntsRun(list(data["fwdtransforms"]), float(data["seconds"]))


def _worker(job_path: str) -> None:
    """Entry point of :func:`register_in_worker`'s process: run the pickled job, write the result as JSON."""
    with open(job_path, "rb") as fh:
        job = pickle.load(fh)
    if itk_threads() is None or str(itk_threads()) != os.environ.get(_THREAD_VARIABLE):
        raise RuntimeError(
            f"worker could not fix ITK's thread count ({_THREAD_VARIABLE}={os.environ.get(_THREAD_VARIABLE)!r})"
        )
    run = register(
        job["moving"],
        job["fixed"],
        job["outprefix"],
        type_of_transform=job["type_of_transform"],
        seed=job["seed"],
        **job["kwargs"],
    )
    Path(job["result"]).write_text(json.dumps({"fwdtransforms": run.fwdtransforms, "seconds": run.seconds}))
