"""The qualitative panels of the pipeline: for one test dataset, the pair the evaluation saved transforms for
(:func:`mgicon.evaluate.runner.example_pair`), registered by every method, drawn by
:func:`mgicon.tables.figures.registration_panels`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from mgicon.config import setting
from mgicon.data.build import read_preprocessed
from mgicon.data.registry import load_registry
from mgicon.evaluate.runner import example_pair, select_pairs
from mgicon.io import itk as itkio
from mgicon.records import PairRecord, ScanRecord, parse_rows, read_records
from mgicon.tables.figures import registration_panels
from mgicon.vocabulary import METHOD_LABELS, SYN

#: the panels' row names: SyN as the tables print it, every other method by its own (short) name
DISPLAY = {SYN: METHOD_LABELS[SYN]}


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
    pairs = select_pairs(read_records(pairs_csv, PairRecord), spec, setting(config, "evaluation.max_pairs"))
    pair = example_pair(pairs)
    if pair is None:
        raise ValueError(f"{pairs_csv}: no test pair to draw")
    scans = {s.key: s for s in parse_rows(read_preprocessed(preprocessed_csv), ScanRecord, preprocessed_csv)}
    moving, fixed = scans[pair.scan_key("moving")], scans[pair.scan_key("fixed")]
    loaded = {DISPLAY.get(m, m): itkio.read_transform(path) for m, path in transforms.items()}
    title = (
        f"{dataset}: {pair.moving_subject} {pair.moving_modality} → {pair.fixed_subject} {pair.fixed_modality} (w/o IO)"
    )
    return registration_panels(itkio.read_image(fixed.image), itkio.read_image(moving.image), loaded, out, title=title)
