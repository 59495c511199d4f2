"""One training job of the pipeline: a stage (``stage1``, ``stage2``, ``finetune``) of a variant.

Variants are configuration (``variants:`` in the pipeline config): the similarity, which datasets and modalities,
the loss-randomization mode, and for a finetuned variant the variant it starts from.  Stage 1 trains the network
without its last full-resolution step on the pretraining pairs; stage 2 adds the last step, initialised from stage 1;
``finetune`` continues a finished variant on the finetuning pairs (no CT inversion, anatomy-balanced weights).

Outputs in ``results/models/{variant}/{stage}/``: ``latest.pt`` (periodic, for resuming), ``final.pt``,
``samples.csv`` (every draw) and ``mlflow_run.json`` (the MLflow run of the job).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from mgicon.config import resolve
from mgicon.data.registry import load_registry, stage_weights
from mgicon.train.data import TrainingData
from mgicon.train.loop import TrainConfig, _rank_world, train
from mgicon.vocabulary import STAGE1, STAGE_DATA


def variant_weights(config: Mapping[str, Any], variant: str, stage: str) -> dict[str, float]:
    """Sampling weights of the datasets a variant trains on in ``stage`` (its ``datasets`` subset, if any)."""
    registry = load_registry(config["datasets"])
    spec = config["variants"][variant]
    chosen = spec.get("datasets")
    subset = {n: s for n, s in registry.items() if not chosen or n in chosen}
    return stage_weights(subset, STAGE_DATA[stage])


def stage_config(config: Mapping[str, Any], variant: str, stage: str, init_from: str | None) -> TrainConfig:
    """The training job of ``stage`` of ``variant``, every setting read from the (resolved) ``config``."""
    config = resolve(config, cross_check=False)
    training = config["training"]
    spec = config["variants"][variant]
    return TrainConfig(
        network={**config["network"], "include_last_step": stage != STAGE1},
        similarity=spec["similarity"],
        lncc_sigma=float(training["lncc_sigma"]),
        lr=float(training["lr"]),
        batch_size=int(training["batch_size"]),
        device_batch=training["device_batch"],
        steps=int(training["steps"][stage]),
        checkpoint_every=int(training["checkpoint_every"]),
        bn_recalibration=int(training["bn_recalibration"]),
        log_every=int(training["log_every"]),
        augment=bool(training["augment"]),
        axis_permutation=bool(training["axis_permutation"]),
        affine_std=float(training["affine_std"]),
        seed=int(config["seed"]),
        bf16=bool(training["bf16"]),
        channels_last=bool(training["channels_last"]),
        device=str(training["device"]),
        dice_loss_weight=float(spec["dice_loss_weight"]),
        loss_function_masking=bool(spec["loss_function_masking"]),
        init_from=init_from,
    )


def run_stage(
    config: Mapping[str, Any],
    variant: str,
    stage: str,
    out_dir: str | os.PathLike,
    preprocessed: Mapping[str, str],
    pair_lists: Mapping[str, str],
    init_from: str | None = None,
    progress: bool = True,
) -> Path:
    """Train one stage of one variant (resuming if ``out_dir/latest.pt`` exists) and record it in MLflow."""
    from mgicon.tracking import config_tracker

    out_dir = Path(out_dir)
    config = resolve(config, cross_check=False)
    spec = config["variants"][variant]
    cfg = stage_config(config, variant, stage, init_from)
    weights = variant_weights(config, variant, stage)
    registry = load_registry(config["datasets"])
    data = TrainingData(
        STAGE_DATA[stage],
        registry,
        weights,
        preprocessed,
        pair_lists,
        randomization=spec["randomization"],
        modalities=spec["modalities"],
        seed=cfg.seed,
        inputs_from_loss=bool(spec["erratum"]),
        segmentations=cfg.dice_loss_weight > 0,
        loss_masks=cfg.loss_function_masking,
    )
    rank, _ = _rank_world()
    tracker = None
    if rank == 0:
        run_file = out_dir / "mlflow_run.json"
        previous = None
        if run_file.is_file() and (out_dir / "latest.pt").is_file():
            import json

            previous = json.loads(run_file.read_text(encoding="utf-8")).get("run_id")
        tracker = config_tracker(
            config,
            f"train-{variant}-{stage}",
            params={
                "variant": variant,
                "stage": stage,
                "train": vars(cfg),
                "variant_spec": dict(spec),
                "weights": weights,
            },
            tags={"job": "train", "variant": variant, "stage": stage},
            run_id=previous,
        )
        tracker.write_run_file(run_file, variant=variant, stage=stage)
    try:
        final = train(cfg, data, out_dir, tracker=tracker, progress=progress)
    except BaseException:
        if tracker is not None:
            tracker.end("FAILED")
        raise
    if tracker is not None:
        tracker.set_tags({"checkpoint": str(final)})
        tracker.end()
        tracker.write_run_file(out_dir / "mlflow_run.json", variant=variant, stage=stage, checkpoint=str(final))
    return final
