"""Preprocessing (Sec. 3.3): per-modality normalisation to [0, 1] and resizing to the network shape.

CT and CBCT are clipped to [−1000, 1000] HU, every MR-derived modality (T1w, T2w, FLAIR, DESS, FA, MD, DIXON, …) at
its 99th percentile (:mod:`mgicon.io.normalize`).  Images are resized trilinearly (labels and masks: nearest) and
written as NIfTI volumes covering the original field of view, so they still open in any viewer; the originals stay
where they are, for evaluation at the original resolution.  Masks are resized too; applying them (the lung ROI of
COPDGene in finetuning) is the training loader's job, per stage.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mgicon.io import itk as itkio
from mgicon.io.normalize import normalize
from mgicon.records import ORIENTATION_COLUMN

CT_LIKE = {"ct", "cbct"}


def normalization_for(modality: str) -> str:
    """``ct`` for CT-like modalities, ``mri`` (min to 99th percentile) for all others."""
    return "ct" if modality.lower() in CT_LIKE else "mri"


def _scan_name(row: Mapping[str, str]) -> str:
    return f"{row['subject']}_{row['timepoint']}"


def preprocess_rows(
    rows: Sequence[Mapping[str, str]], shape: Sequence[int], out_dir: str | Path, orientation: str | None = None
) -> list[dict]:
    """Normalise and resize every image (and its label and mask) of a manifest; returns the rows with the
    ``network_*`` columns pointing at the written volumes and ``orientation`` holding their arrays' axis
    orientation.

    ``orientation`` (a DICOM code, e.g. ``"LPS"``): every volume's voxel array is first permuted and flipped to it
    (:func:`mgicon.io.itk.reorient`, no resampling), so scans stored in different axis orientations reach the
    network alike; None keeps each as stored."""
    out_dir = Path(out_dir)
    done: dict[str, str] = {}
    out = []
    for row in rows:
        image, array = itkio.read_scalar_image(row["image"])
        if orientation is not None:
            array, image = itkio.reorient_array(array, image, orientation), itkio.reorient(image, orientation)
        normalised = normalize(array, normalization_for(row["modality"]))
        volume = itkio.resize_to_network(normalised, shape)[0, 0].numpy()
        target = out_dir / f"{_scan_name(row)}_{row['modality']}.nii.gz"
        itkio.write_image(itkio.on_network_grid(volume, image), target)
        new = {**row, "network_image": str(target), "network_label": "", "network_mask": ""}
        new[ORIENTATION_COLUMN] = itkio.orientation_code(image)
        for key, column, dtype in (("label", "network_label", np.uint16), ("mask", "network_mask", np.uint8)):
            source = row.get(key)
            if not source:
                continue
            if source not in done:
                label_image = itkio.read_image(source, what=key)
                if orientation is not None:
                    label_image = itkio.reorient(label_image, orientation)
                labels = itkio.to_array(label_image)
                resized = itkio.resize_to_network(labels.astype(np.float32), shape, nearest=True)[0, 0].numpy()
                tag = hashlib.sha1(str(source).encode()).hexdigest()[:8]
                path = out_dir / f"{_scan_name(row)}_{key}_{tag}.nii.gz"
                itkio.write_image(itkio.on_network_grid(resized.astype(dtype), image), path)
                done[source] = str(path)
            new[column] = done[source]
        out.append(new)
    return out
