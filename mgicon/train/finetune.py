"""Finetuning a released model or a checkpoint on one's own images (``mgicon finetune``).

The user's manifests (:mod:`mgicon.data.manifest` format, one dataset per ``dataset`` value) go through the
pipeline's own data stage (preprocessing to the network grid, pair lists of the ``finetune`` stage from the
``split=train`` scans), and the network through its training loop (:func:`mgicon.train.loop.train`: the GradICON
objective, resumable from ``latest.pt``, an MLflow run).  Layout of ``out_dir``::

    data/{dataset}/manifest.csv, preprocessed.csv, network/   the data stage
    pairs/{dataset}.csv                                       the finetuning pairs
    train/latest.pt, final.pt, samples.csv, mlflow_run.json   the training job (a rerun resumes here)
    checkpoint.pt                                             the result: weights with their network config
    mlflow.db, mlartifacts/                                   the default MLflow store

The network keeps the starting checkpoint's layout and, by the input-shape rule of
:func:`mgicon.network.checkpoint.checkpoint_input_shape`, its grid unless ``input_shape`` is given.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from mgicon.config import schema_default
from mgicon.data.build import _absolute, build_pair_list, build_preprocessed
from mgicon.data.manifest import ManifestError, check_files, read_csv, read_manifest, write_manifest
from mgicon.data.registry import load_registry, stage_weights
from mgicon.fsutil import atomic_write_text
from mgicon.vocabulary import FINETUNE, PAIRINGS


def _default(key: str):
    return field(default_factory=lambda: schema_default(key))


@dataclass
class FinetuneOptions:
    """The settings of one finetuning run; defaults are the config schema's (``training``, ``variants.*``)."""

    similarity: str = _default("variants.*.similarity")
    randomization: str = _default("variants.*.randomization")
    steps: int = _default("training.steps.finetune")
    lr: float = _default("training.lr")
    batch_size: int = _default("training.batch_size")
    checkpoint_every: int = _default("training.checkpoint_every")
    augment: bool = _default("training.augment")
    lncc_sigma: float = _default("training.lncc_sigma")
    seed: int = _default("seed")
    device: str | None = _default("training.device")
    bf16: bool = _default("training.bf16")
    dice_loss_weight: float = _default("variants.*.dice_loss_weight")
    loss_function_masking: bool = _default("variants.*.loss_function_masking")
    pairing: str = "inter"
    roi_masking: bool = False
    keep_orientation: bool = False
    input_shape: tuple[int, int, int] | None = None
    tracking_uri: str | None = None
    tracking: bool = True


def own_datasets(
    manifests: Sequence[str | os.PathLike],
    pairing: str,
    roi_masking: bool,
    needs: Sequence[tuple[str, str]] = (),
) -> dict[str, dict]:
    """The ``datasets`` config entries of the manifests' datasets (finetune stage only) and their rows.

    ``needs``: ``(column, why)`` pairs, a manifest column every ``split=train`` row must fill (``label`` for the Dice
    term, ``mask`` for masking).

    Raises:
        ManifestError: a manifest that cannot be read, names missing files, has no ``split=train`` scan, lacks a
            needed column value, or a dataset spread over two manifests.
    """
    if pairing not in PAIRINGS:
        raise ManifestError(f"--pairing {pairing}: not one of {', '.join(PAIRINGS)}")
    datasets: dict[str, dict] = {}
    for manifest in manifests:
        manifest = Path(manifest)
        rows = read_manifest(manifest)
        check_files(rows, manifest)
        if not rows:
            raise ManifestError(f"{manifest}: no image rows")
        for row in _absolute(rows, manifest):
            name = row["dataset"] or manifest.stem
            entry = datasets.setdefault(name, {"manifest": manifest, "rows": []})
            if entry["manifest"] != manifest:
                raise ManifestError(f"{manifest}: dataset {name} is also in {entry['manifest']}")
            entry["rows"].append({**row, "dataset": name})
            for column, why in needs:
                if row["split"] == "train" and not row.get(column):
                    scan = f"{row['subject']}/{row['timepoint']}/{row['modality']}"
                    raise ManifestError(f"{manifest}: split=train row {scan} has no {column}, which {why} needs")
    for name, entry in datasets.items():
        if not any(r["split"] == "train" for r in entry["rows"]):
            raise ManifestError(f"{entry['manifest']}: dataset {name} has no split=train image to finetune on")
        entry["spec"] = {
            "region": name,
            "modalities": sorted({r["modality"] for r in entry["rows"]}),
            "pairing": pairing,
            "stages": [FINETUNE],
            "roi_mask": roi_masking,
            "source": {"kind": "manifest", "path": str(entry["manifest"])},
        }
    return datasets


def prepare_data(
    manifests: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    shape: Sequence[int],
    pairing: str,
    roi_masking: bool,
    seed: int,
    needs: Sequence[tuple[str, str]] = (),
    keep_orientation: bool = False,
) -> tuple[dict, dict[str, str], dict[str, str]]:
    """Preprocess the manifests' images to ``shape`` and write the finetuning pairs; returns the ``datasets``
    config, and each dataset's ``preprocessed.csv`` and pair list.  Skipped where a previous run (same manifest
    file, grid, pairing and orientation) left them.

    Every volume is brought to the axis orientation most of the images are stored in (as ``mgicon register``
    brings the moving image to the fixed one's), so the network never learns mirrored or axis-swapped pairs;
    ``keep_orientation`` keeps each as stored (upstream's raw arrays)."""
    from mgicon.io.itk import common_orientation

    out_dir = Path(out_dir)
    own = own_datasets(manifests, pairing, roi_masking, needs)
    orientation = None
    if not keep_orientation:
        orientation = common_orientation([r["image"] for e in own.values() for r in e["rows"]])
    config = {"seed": seed, "network": {"input_shape": list(shape)}, "datasets": {n: e["spec"] for n, e in own.items()}}
    preprocessed, pair_lists = {}, {}
    for name, entry in own.items():
        folder = out_dir / "data" / name
        stat = Path(entry["manifest"]).stat()
        stamp = json.dumps(
            {
                "manifest": str(Path(entry["manifest"]).resolve()),
                "size": stat.st_size,
                "mtime": stat.st_mtime_ns,
                "shape": list(shape),
                "pairing": pairing,
                "seed": seed,
                "orientation": orientation,
            }
        )
        stamp_file, csv_path = folder / "prepared.json", folder / "preprocessed.csv"
        pairs = out_dir / "pairs" / f"{name}.csv"
        if not (stamp_file.is_file() and stamp_file.read_text(encoding="utf-8") == stamp and pairs.is_file()):
            write_manifest(entry["rows"], folder / "manifest.csv")
            build_preprocessed(name, config, folder / "manifest.csv", csv_path, orientation)
            build_pair_list(FINETUNE, name, config, csv_path, pairs)
            atomic_write_text(stamp_file, stamp)
        if not read_csv(pairs):
            raise ManifestError(f"{entry['manifest']}: dataset {name} has no {pairing} pair of split=train scans")
        preprocessed[name], pair_lists[name] = str(csv_path), str(pairs)
    return config["datasets"], preprocessed, pair_lists


def finetune(
    model: str,
    manifests: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    options: FinetuneOptions | None = None,
    allow_download: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> Path:
    """Finetune ``model`` (``unigradicon``, ``multigradicon`` or a checkpoint path) on ``manifests``; returns
    ``out_dir/checkpoint.pt``.  A rerun with the same arguments resumes from ``out_dir/train/latest.pt``;
    ``stop_after`` ends this call after that many steps (a simulated kill, for tests) and returns ``latest.pt``.
    ``options.device`` None: :func:`mgicon.register.choose_device`.

    Raises:
        OutputError: ``out_dir`` is not a folder or cannot be written.
        ManifestError: a manifest is missing or unusable (:func:`own_datasets`).
        OptionError: no CUDA device for ``device="cuda"``.
    """
    from mgicon.fsutil import OutputError, check_folder
    from mgicon.network.checkpoint import checkpoint_input_shape, load_checkpoint, write_checkpoint
    from mgicon.register import choose_device
    from mgicon.tracking import config_tracker
    from mgicon.train.data import TrainingData
    from mgicon.train.loop import TrainConfig, train
    from mgicon.weights import resolve_model

    options = options or FinetuneOptions()
    device = choose_device(options.device)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir}: exists and is not a folder")
    check_folder(f"--out {out_dir}", out_dir)
    for manifest in manifests:
        if not Path(manifest).is_file():
            raise ManifestError(f"--manifest {manifest}: no such file")
    source_path = resolve_model(model, allow_download)
    source = load_checkpoint(source_path)
    shape = checkpoint_input_shape(source, options.input_shape)
    network = source["config"].replace(input_shape=shape).to_dict()
    needs = [("label", "--dice-loss-weight > 0")] if options.dice_loss_weight > 0 else []
    needs += [("mask", "--roi-masking")] if options.roi_masking else []
    needs += [("mask", "--loss-function-masking")] if options.loss_function_masking else []
    datasets, preprocessed, pair_lists = prepare_data(
        manifests, out_dir, shape, options.pairing, options.roi_masking, options.seed, needs, options.keep_orientation
    )
    registry = load_registry(datasets)
    weights = stage_weights(registry, FINETUNE)
    data = TrainingData(
        FINETUNE,
        registry,
        weights,
        preprocessed,
        pair_lists,
        randomization=options.randomization,
        seed=options.seed,
        segmentations=options.dice_loss_weight > 0,
        loss_masks=options.loss_function_masking,
    )
    cfg = TrainConfig(
        network=network,
        similarity=options.similarity,
        lncc_sigma=float(options.lncc_sigma),
        lr=float(options.lr),
        batch_size=int(options.batch_size),
        steps=int(options.steps),
        checkpoint_every=int(options.checkpoint_every),
        augment=bool(options.augment),
        seed=int(options.seed),
        bf16=bool(options.bf16),
        device=device,
        dice_loss_weight=float(options.dice_loss_weight),
        loss_function_masking=bool(options.loss_function_masking),
        init_from=str(source_path),
    )
    train_dir = out_dir / "train"
    tracker = None
    if options.tracking:
        run_file = train_dir / "mlflow_run.json"
        previous = None
        if run_file.is_file() and (train_dir / "latest.pt").is_file():
            previous = json.loads(run_file.read_text(encoding="utf-8")).get("run_id")
        tracking: dict[str, Any] = {"uri": options.tracking_uri} if options.tracking_uri else {}
        tracker = config_tracker(
            {"results": str(out_dir), "tracking": tracking},
            f"finetune-{out_dir.name}",
            params={"model": model, "manifests": [str(m) for m in manifests], "train": vars(cfg), "weights": weights},
            tags={"job": "finetune", "model": model},
            run_id=previous,
        )
        tracker.write_run_file(run_file, model=model)
    try:
        final = train(cfg, data, train_dir, tracker=tracker, progress=progress, stop_after=stop_after, on_step=on_step)
    except BaseException:
        if tracker is not None:
            tracker.end("FAILED")
        raise
    if stop_after is not None and final.name == "latest.pt":
        if tracker is not None:
            tracker.end("KILLED")
        return final
    state = load_checkpoint(final)
    keep = {"state_dict": state["state_dict"], "step": state["step"], "train_config": state["train_config"]}
    checkpoint = out_dir / "checkpoint.pt"
    write_checkpoint(checkpoint, state["config"], **keep, finetuned_from=model)
    if tracker is not None:
        tracker.set_tags({"checkpoint": str(checkpoint)})
        tracker.end()
        tracker.write_run_file(train_dir / "mlflow_run.json", model=model, checkpoint=str(checkpoint))
    return checkpoint
