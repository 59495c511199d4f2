"""Manifests: one CSV row per image, the contract between the data stage and everything after it.

Columns: ``dataset, subject, timepoint, modality, image, label, landmarks, mask, split`` (plus optional extra
columns such as the synthetic suite's ground-truth fields).  Paths are relative to the manifest's folder unless
absolute; empty fields mean "absent".  A *scan* is one (subject, timepoint): all its modalities are aligned.
Landmark files are CSVs with header ``x,y,z``: physical points in mm (ITK/LPS), rows corresponding between the
scans of a pair.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from mgicon.fsutil import atomic_path

COLUMNS = ("dataset", "subject", "timepoint", "modality", "image", "label", "landmarks", "mask", "split")
FILE_COLUMNS = ("image", "label", "landmarks", "mask")  # the columns that name files
# files of the synthetic suite's ground truth, carried as extra columns
GROUND_TRUTH_COLUMNS = ("gt_to_template", "gt_from_template")


class ManifestError(ValueError):
    """A manifest or a file it names is unusable; the message names the file and the problem."""


def write_csv(rows: Sequence[Mapping[str, object]], path: str | os.PathLike, columns: Sequence[str]) -> None:
    """Write rows atomically (temporary file, then rename), with ``columns`` first and extra keys after."""
    extra = [k for row in rows for k in row if k not in columns]
    header = list(columns) + list(dict.fromkeys(extra))
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def read_csv(path: str | os.PathLike, required: Iterable[str] = ()) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such file")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ManifestError(f"{path}: missing columns {', '.join(missing)}")
        return list(reader)


def write_manifest(rows: Sequence[Mapping[str, object]], path: str | os.PathLike) -> None:
    write_csv(rows, path, COLUMNS)


def read_manifest(path: str | os.PathLike) -> list[dict[str, str]]:
    return read_csv(path, COLUMNS)


def resolve(manifest_path: str | os.PathLike, value: str) -> Path | None:
    """The path a manifest field names (relative to the manifest's folder), or None if empty."""
    if not value:
        return None
    p = Path(value)
    return p if p.is_absolute() else Path(manifest_path).parent / p


def check_files(rows: Sequence[Mapping[str, str]], manifest_path: str | os.PathLike) -> None:
    """Every path a manifest names must exist; the error lists the missing ones."""
    missing = [
        str(resolve(manifest_path, row[c]))
        for row in rows
        for c in FILE_COLUMNS
        if row.get(c) and not resolve(manifest_path, row[c]).exists()
    ]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ManifestError(f"{manifest_path}: {len(missing)} file(s) named in the manifest are missing: {shown}")


def scans(rows: Sequence[Mapping[str, str]]) -> dict[tuple[str, str], dict[str, Mapping[str, str]]]:
    """Rows grouped by scan ``(subject, timepoint)`` → ``{modality: row}``."""
    out: dict[tuple[str, str], dict[str, Mapping[str, str]]] = {}
    for row in rows:
        out.setdefault((row["subject"], row["timepoint"]), {})[row["modality"]] = row
    return out


def read_landmarks(path: str | os.PathLike) -> np.ndarray:
    """A landmark CSV (header ``x,y,z``, mm) as a ``(K, 3)`` array."""
    rows = read_csv(path, ("x", "y", "z"))
    return np.array([[float(r["x"]), float(r["y"]), float(r["z"])] for r in rows], dtype=np.float64).reshape(-1, 3)


def write_landmarks(points: np.ndarray, path: str | os.PathLike) -> None:
    write_csv(
        [{"x": f"{p[0]:.6f}", "y": f"{p[1]:.6f}", "z": f"{p[2]:.6f}"} for p in np.asarray(points)],
        path,
        ("x", "y", "z"),
    )


LANDMARK_FORMATS = ("mm_csv", "voxel_csv", "dirlab_txt", "bratsreg_csv")
#: BraTS-Reg stores the second voxel index shifted by this amount (``Y = j - 239``; see :func:`read_bratsreg_indices`)
BRATSREG_Y_SHIFT = 239.0


def read_bratsreg_indices(path: str | os.PathLike) -> np.ndarray:
    """A BraTS-Reg 2022 landmark CSV as 0-based continuous voxel indices ``(K, 3)`` in ITK (i, j, k) order.

    The files (``BraTSReg_XXX_00_0000_landmarks.csv``, ``BraTSReg_XXX_01_DDDD_landmarks.csv``; header
    ``Landmark,X,Y,Z``, rows in landmark order, corresponding between a subject's baseline and follow-up) hold voxel
    indices of the scan's image array: ``X`` = i along the NIfTI's first axis, ``Y`` = j - 239 along the second
    (the stored values are negative), ``Z`` = k along the third.  This is the reading of ntustison/BraTS-Reg22
    (``Scripts/process_data.py``, the source the layout in config/paper.yaml follows), which adds 239 to ``Y`` and
    maps ``(X, Y + 239, Z)`` through ANTs' 0-based ``transform_index_to_physical_point`` of the scan (after
    truncating to integers; here the indices stay continuous).  On the usual BraTS grid (240 × 240 × 155, 1 mm, ITK
    origin (0, -239, 0), identity direction; not checked here) the numbers are then also the scan's ITK/LPS mm
    coordinates, which is how other public code reads these files.

    Uncertain (neither this repository nor the paper has the challenge's evaluation code): the index base, i.e.
    whether ``Y`` is ``j - 239`` (0-based j, the reading above) or ``j - 240`` (1-based j, as some public code reads
    it), a shift of one voxel (1 mm) along j for every landmark of a scan; and the axis order, taken as ITK's (the
    NIfTI's), which the value ranges seen in public files (X up to 240, Z up to 155) support but do not prove.
    :func:`read_landmarks_as_mm` rejects points whose index falls outside the image, which catches files on another
    grid or in another convention.
    """
    rows = read_csv(path, ("X", "Y", "Z"))
    try:
        points = np.array([[float(r["X"]), float(r["Y"]), float(r["Z"])] for r in rows], dtype=np.float64)
    except ValueError as exc:
        raise ManifestError(f"{path}: not a BraTS-Reg landmark file ({exc})") from None
    points = points.reshape(-1, 3)
    points[:, 1] += BRATSREG_Y_SHIFT
    return points


def _check_inside(path: str | os.PathLike, indices: np.ndarray, image) -> None:
    """Continuous voxel indices must lie within the image (half a voxel beyond the outer centres allowed)."""
    size = np.asarray(image.GetSize(), dtype=np.float64)
    outside = np.flatnonzero(((indices < -0.5) | (indices > size - 0.5)).any(axis=1))
    if outside.size:
        first = indices[outside[0]]
        raise ManifestError(
            f"{path}: {outside.size} landmark(s) fall outside the {tuple(int(s) for s in size)} image "
            f"(first: index {tuple(round(float(v), 3) for v in first)}); wrong image or landmark format?"
        )


def read_landmarks_as_mm(path: str | os.PathLike, image, fmt: str = "mm_csv") -> np.ndarray:
    """Landmarks in mm (ITK/LPS) from any supported format, using ``image`` (SimpleITK) for voxel formats.

    ``mm_csv``: ours (header x,y,z, mm).  ``voxel_csv``: Learn2Reg keypoints, 0-based continuous voxel indices
    (x, y, z), no header.  ``dirlab_txt``: DIR-Lab, 1-based voxel indices, whitespace-separated.
    ``bratsreg_csv``: BraTS-Reg 2022, header ``Landmark,X,Y,Z``, voxel indices with ``Y`` shifted by -239
    (:func:`read_bratsreg_indices`).
    """
    if fmt == "mm_csv":
        return read_landmarks(path)
    if fmt not in LANDMARK_FORMATS:
        raise ManifestError(f"{path}: unknown landmark format {fmt!r}; use one of {LANDMARK_FORMATS}")
    from mgicon.io.itk import index_to_physical

    if fmt == "bratsreg_csv":
        points = read_bratsreg_indices(path)
        _check_inside(path, points, image)
        return index_to_physical(image, points)
    try:
        points = np.loadtxt(path, delimiter="," if fmt == "voxel_csv" else None, ndmin=2)
    except ValueError as exc:
        raise ManifestError(f"{path}: not a {fmt} landmark file ({exc})") from None
    if points.shape[1] != 3:
        raise ManifestError(f"{path}: expected 3 columns, found {points.shape[1]}")
    if fmt == "dirlab_txt":
        points = points - 1.0
    return index_to_physical(image, points)
