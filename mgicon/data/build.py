"""The data stage's jobs, one function per Snakemake rule (the rule scripts only unpack ``snakemake`` and call).

Artifacts: ``results/data/{dataset}/manifest.csv`` (one row per original image), ``results/data/{dataset}/
preprocessed.csv`` (the same rows plus the network-shape volumes under ``results/data/{dataset}/network/`` and
their arrays' axis orientation),
``results/pairs/{stage}/{dataset}.csv`` and ``results/pairs/{stage}/weights.csv``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from mgicon.config import setting
from mgicon.data import adapters
from mgicon.data.manifest import (
    COLUMNS,
    FILE_COLUMNS,
    GROUND_TRUTH_COLUMNS,
    check_files,
    read_csv,
    read_landmarks_as_mm,
    read_manifest,
    write_csv,
    write_landmarks,
    write_manifest,
)
from mgicon.data.pairs import PAIR_COLUMNS, TEST_COLUMNS, WEIGHT_COLUMNS, make_pairs, weights_table
from mgicon.data.preprocess import preprocess_rows
from mgicon.data.registry import load_registry, stage_weights
from mgicon.records import NETWORK_COLUMNS

PATH_COLUMNS = (*FILE_COLUMNS, *GROUND_TRUTH_COLUMNS, *NETWORK_COLUMNS)


def _portable(path: str, base: Path) -> str:
    """A path relative to ``base`` when it lies inside the working directory, else absolute."""
    if not path:
        return ""
    p = Path(path).resolve()
    try:
        p.relative_to(Path.cwd().resolve())
    except ValueError:
        return str(p)
    return os.path.relpath(p, base.resolve())


def _absolute(rows: list[dict[str, str]], manifest: Path) -> list[dict[str, str]]:
    return [{**r, **{c: str((manifest.parent / r[c]).resolve()) for c in PATH_COLUMNS if r.get(c)}} for r in rows]


def _landmarks_to_mm(rows: list[dict], fmt: str, folder: Path) -> list[dict]:
    """Convert voxel-index landmark files to our mm CSVs (written under ``folder``)."""
    from mgicon.io.itk import read_image

    out = []
    for row in rows:
        if row.get("landmarks"):
            target = folder / f"{row['subject']}_{row['timepoint']}_{row['modality']}.csv"
            write_landmarks(read_landmarks_as_mm(row["landmarks"], read_image(row["image"]), fmt), target)
            row = {**row, "landmarks": str(target)}
        out.append(row)
    return out


def build_manifest(name: str, config: Mapping[str, Any], out: str | os.PathLike) -> list[dict]:
    """Write ``results/data/{name}/manifest.csv`` from the dataset's registry source."""
    out = Path(out)
    spec = load_registry(config["datasets"])[name]
    resources = Path(setting(config, "resources"))
    # a synthetic dataset is drawn from this study's seed and settings: its files belong to the study's results
    # (results/data/{name}/generated/), so that studies sharing `resources` (another seed) never overwrite them
    rows = adapters.dataset_rows(
        name,
        spec.source,
        resources,
        out.parent / "generated",
        seed=int(setting(config, "seed")),
        synthetic=config.get("synthetic"),
    )
    rows = [r for r in rows if r["modality"] in spec.modalities]
    if not rows:
        raise adapters.DatasetSourceError(f"dataset {name}: no image of modalities {spec.modalities}")
    fmt = (spec.source.get("layout") or {}).get("landmarks_format", "mm_csv")
    if fmt != "mm_csv":
        rows = _landmarks_to_mm(rows, fmt, out.parent / "landmarks")
    portable = [{**r, **{c: _portable(r[c], out.parent) for c in PATH_COLUMNS if c in r}} for r in rows]
    write_manifest(portable, out)
    check_files(read_manifest(out), out)
    return portable


def build_preprocessed(
    name: str,
    config: Mapping[str, Any],
    manifest: str | os.PathLike,
    out: str | os.PathLike,
    orientation: str | None = None,
) -> None:
    """Write the network-shape volumes and ``preprocessed.csv`` for one dataset (``orientation``: see
    :func:`mgicon.data.preprocess.preprocess_rows`)."""
    manifest, out = Path(manifest), Path(out)
    rows = _absolute(read_manifest(manifest), manifest)
    shape = tuple(config["network"]["input_shape"])
    processed = preprocess_rows(rows, shape, out.parent / "network", orientation)
    write_csv(
        [{**r, **{c: _portable(r[c], out.parent) for c in PATH_COLUMNS if r.get(c)}} for r in processed], out, COLUMNS
    )


def preprocess_dataset(
    name: str, config: Mapping[str, Any], manifest: str | os.PathLike, out: str | os.PathLike
) -> None:
    """The ``preprocess`` rule: :func:`build_preprocessed` with every scan brought to the axis orientation most of
    the dataset's images are stored in (:func:`mgicon.io.itk.common_orientation`, as ``mgicon finetune`` does), so
    that a dataset of mixed orientations never pairs mirrored or axis-swapped arrays; ``datasets.NAME.
    keep_orientation`` keeps each as stored."""
    from mgicon.io.itk import common_orientation

    orientation = None
    if not load_registry(config["datasets"])[name].keep_orientation:
        manifest = Path(manifest)
        orientation = common_orientation([r["image"] for r in _absolute(read_manifest(manifest), manifest)])
    build_preprocessed(name, config, manifest, out, orientation)


def read_preprocessed(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a ``preprocessed.csv`` with absolute paths."""
    path = Path(path)
    return _absolute(read_csv(path, (*COLUMNS, *NETWORK_COLUMNS)), path)


def build_pair_list(
    stage: str, name: str, config: Mapping[str, Any], preprocessed: str | os.PathLike, out: str | os.PathLike
) -> None:
    """Write ``results/pairs/{stage}/{name}.csv``."""
    registry = load_registry(config["datasets"])
    weight = stage_weights(registry, stage)[name]
    pairs = make_pairs(registry[name], read_preprocessed(preprocessed), stage, weight, int(setting(config, "seed")))
    write_csv(pairs, out, TEST_COLUMNS if stage == "test" else PAIR_COLUMNS)


def build_weights(stage: str, config: Mapping[str, Any], pair_lists: Mapping[str, str], out: str | os.PathLike) -> None:
    """Write ``results/pairs/{stage}/weights.csv``: weight, expected and published share per dataset."""
    registry = load_registry(config["datasets"])
    weights = stage_weights(registry, stage)
    counts = {name: len(read_csv(path)) for name, path in pair_lists.items()}
    write_csv(weights_table(weights, counts, registry, stage), out, WEIGHT_COLUMNS)
