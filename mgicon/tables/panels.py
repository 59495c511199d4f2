"""The qualitative panels of the pipeline: for one test dataset, the pair the evaluation saved transforms for
(:func:`mgicon.evaluate.runner.example_pair`), registered by every method, drawn by
:func:`mgicon.tables.figures.registration_panels`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from mgicon.config import setting
from mgicon.data.build import read_preprocessed
from mgicon.data.manifest import read_csv
from mgicon.data.registry import load_registry
from mgicon.evaluate.runner import example_pair, select_pairs
from mgicon.io import itk as itkio
from mgicon.tables.figures import registration_panels

DISPLAY = {"syn": "SyN", "identity": "identity"}


def example_panels(
    config: Mapping[str, Any],
    dataset: str,
    transforms: Mapping[str, str | os.PathLike],
    pairs_csv: str | os.PathLike,
    preprocessed_csv: str | os.PathLike,
    out: str | os.PathLike,
) -> Path:
    """Draw ``dataset``'s example pair under each method's saved transform (method → ``.example.h5``)."""
    spec = load_registry(config["datasets"])[dataset]
    pairs = select_pairs(read_csv(pairs_csv), spec, setting(config, "evaluation.max_pairs"))
    pair = example_pair(pairs)
    if pair is None:
        raise ValueError(f"{pairs_csv}: no test pair to draw")
    scans = {(r["subject"], r["timepoint"], r["modality"]): r for r in read_preprocessed(preprocessed_csv)}
    moving = scans[(pair["moving_subject"], pair["moving_timepoint"], pair["moving_modality"])]
    fixed = scans[(pair["fixed_subject"], pair["fixed_timepoint"], pair["fixed_modality"])]
    loaded = {DISPLAY.get(m, m): itkio.read_transform(path) for m, path in transforms.items()}
    title = (f"{dataset}: {pair['moving_subject']} {pair['moving_modality']} → "
             f"{pair['fixed_subject']} {pair['fixed_modality']} (w/o IO)")
    return registration_panels(itkio.read_image(fixed["image"]), itkio.read_image(moving["image"]), loaded, out,
                               title=title)
