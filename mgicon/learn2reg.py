"""Learn2Reg submissions (``mgicon learn2reg``, the pipeline's ``learn2reg`` target): one displacement field per
pair of a split of a Learn2Reg ``*_dataset.json``, named and laid out as the official evaluation reads them, and
their zip.

Each pair is registered as ``mgicon register`` registers it (:func:`mgicon.register.register_images`, the same
:class:`~mgicon.register.RegisterOptions`); the json's label maps feed IO's Dice term (``dice_loss_weight > 0``)
and its masks restrict IO's similarity (``masks``, or ``input_masking``, which also multiplies them into the
images).  Names: :attr:`mgicon.data.adapters.Learn2RegPair.displacement_name`; fields:
:func:`mgicon.io.itk.learn2reg_displacement`; the zip holds the fields at its top level, as the evaluation and
grand-challenge expect.  Outputs are checked before any work and committed all or none.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from mgicon import register as reg
from mgicon.config import setting
from mgicon.data.adapters import DatasetSourceError, learn2reg_json, learn2reg_modalities, learn2reg_pairs
from mgicon.fsutil import OutputError, StagedOutputs, check_outputs
from mgicon.io import itk as itkio
from mgicon.vocabulary import IO_SIMILARITY


def learn2reg_modality(names: Mapping[str, str], channel: str, given: str | None, option: str) -> str:
    """``ct`` or ``mri`` for a Learn2Reg channel: ``given``, else from the json's modality name of the channel
    (``CT``, ``CBCT``, ``FBCT`` → ct; ``MR``, ``T1``, ``T2``, ``FLAIR`` → mri).

    Raises:
        OptionError: the name says neither (naming ``option``, which would settle it).
    """
    if given:
        return given
    name = names.get(channel, "")
    lowered = name.lower()
    if "ct" in lowered:
        return "ct"
    if any(word in lowered for word in ("mr", "t1", "t2", "flair")):
        return "mri"
    raise reg.OptionError(f"--dataset-json: channel {channel} has modality {name or 'none'!r}; give {option} ct or mri")


def _side_file(path: Path | None, image: Path, what: str, option: str) -> Path:
    if path is None:
        raise reg.OptionError(f"{option}: the dataset json lists no {what} for {image}")
    return path


def write_submission(
    dataset_json: str | os.PathLike,
    split: str,
    model: str,
    out_dir: str | os.PathLike,
    options: reg.RegisterOptions | None = None,
    *,
    zip_path: str | os.PathLike | None = None,
    fixed_modality: str | None = None,
    moving_modality: str | None = None,
    masks: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Register every pair of ``split`` (``val``, ``test``) of ``dataset_json`` with ``model`` and write one field
    per pair into ``out_dir`` and their zip (default ``OUT.zip`` beside ``out_dir``); returns the zip's path.

    Args:
        fixed_modality, moving_modality: ``ct`` or ``mri`` for every pair (default: :func:`learn2reg_modality`).
        masks: the json's masks restrict IO's similarity (implied by ``options.input_masking``).
        log: called with one line per written field.

    Raises:
        OptionError: the json cannot be read, lists no such pairs, or lacks a label or mask the options need; a
            modality that cannot be told.
        OutputError: an output that could not be written (checked before any work).
    """
    options = options or reg.RegisterOptions()
    dataset_json = Path(dataset_json)
    try:
        pairs = learn2reg_pairs(dataset_json, split)
        names = learn2reg_modalities(dataset_json)
    except DatasetSourceError as exc:
        raise reg.OptionError(f"--dataset-json {exc}") from None
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir}: exists and is not a folder")
    zip_path = Path(zip_path) if zip_path else out_dir.parent / f"{out_dir.name}.zip"
    if zip_path.suffix != ".zip":
        raise OutputError(f"--zip-out {zip_path}: must end in .zip")
    images = [path for pair in pairs for path in (pair.fixed, pair.moving)]
    check_outputs(
        [("--out", out_dir / pair.displacement_name, "4-D image") for pair in pairs] + [("--zip-out", zip_path, None)],
        [("--dataset-json", dataset_json), ("--model", model)] + [("--dataset-json", path) for path in images],
        itkio.output_format_problem,
    )
    use_masks, use_labels = masks or options.input_masking, options.dice_loss_weight > 0
    mask_option = "--input-masking" if options.input_masking else "--masks"
    sides = []
    for pair in pairs:
        side = []
        for role, given in (("fixed", fixed_modality), ("moving", moving_modality)):
            image, channel = getattr(pair, role), getattr(pair, f"{role}_channel")
            mask, label = getattr(pair, f"{role}_mask"), getattr(pair, f"{role}_label")
            side.append(
                reg.ImageFiles(
                    image,
                    learn2reg_modality(names, channel, given, f"--{role}-modality"),
                    _side_file(mask, image, "mask", mask_option) if use_masks else None,
                    _side_file(label, image, "label", "--dice-loss-weight") if use_labels else None,
                )
            )
        sides.append((*side, reg.plan_inputs(*side, options)))
    torch.manual_seed(options.seed)
    net = reg.load_model(model, options)
    similarity = options.io_similarity or reg.default_io_similarity(model)
    with StagedOutputs() as out:
        written = []
        for k, (pair, (fixed, moving, plan)) in enumerate(zip(pairs, sides), start=1):
            result = reg.register_images(net, fixed, moving, options, plan, similarity)
            field = itkio.displacement_field(result.transform, result.fixed)
            path = out.path(out_dir / pair.displacement_name)
            itkio.write_image(itkio.learn2reg_displacement(field, result.moving), path, atomic=False)
            written.append(path)
            if log is not None:
                log(f"[{k}/{len(pairs)}] {pair.displacement_name}")
        with zipfile.ZipFile(out.path(zip_path), "w", zipfile.ZIP_STORED) as archive:  # the fields are gzipped
            for path in written:
                archive.write(path, arcname=path.name)
        out.commit()
    return zip_path


def submission_job(
    config: Mapping[str, Any],
    dataset: str,
    split: str,
    out_dir: str | os.PathLike,
    zip_path: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """The pipeline's ``learn2reg_split`` job: :func:`write_submission` for a Learn2Reg dataset of the config.

    Args:
        config: the job's slice of the resolved config: ``seed``, ``resources``, the dataset's ``source``, the
            method's ``released`` entry (None for a trained variant), ``io`` (an IO setting) and ``evaluation``'s
            settings of a network method.
        checkpoint: a trained variant's weights (a released method's come from ``released.model``).
    """
    released = config.get("released") or {}
    similarity = IO_SIMILARITY[config["io"]]
    options = reg.RegisterOptions(
        io_iterations=int(setting(config, "evaluation.io_iterations")) if similarity else 0,
        io_similarity=similarity,
        io_lr=float(setting(config, "evaluation.io_lr")),
        io_lncc_sigma=float(setting(config, "evaluation.io_lncc_sigma")),
        keep_orientation=bool(setting(config, "evaluation.keep_orientation")),
        affine=bool(setting(config, "evaluation.affine")),
        affine_metric=str(setting(config, "evaluation.affine_metric")),
        seed=int(setting(config, "seed")),
        device=str(setting(config, "evaluation.device")),
        bf16=bool(setting(config, "evaluation.bf16")),
        input_shape=tuple(released["input_shape"]) if released.get("input_shape") else None,
    )
    dataset_json = learn2reg_json(dataset, config["source"], Path(config["resources"]))
    model = str(checkpoint or released["model"])
    return write_submission(dataset_json, split, model, out_dir, options, zip_path=zip_path, log=log)
