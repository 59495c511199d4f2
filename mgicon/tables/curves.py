"""The training curves of the pipeline: each variant's objective terms, read from the MLflow runs of its training
jobs (``results/models/{variant}/mlflow_run.json`` names them), drawn by
:func:`mgicon.tables.figures.training_curves`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from mgicon.tables.figures import training_curves
from mgicon.tracking import metric_history
from mgicon.vocabulary import TRAINING_STAGES, TRAINING_TERMS


def _steps(variant: str, config: Mapping[str, Any], runs: Mapping[str, Mapping[str, Any]]) -> int:
    """Training steps before ``variant``'s own: those of the variant it is finetuned from, recursively."""
    source = config["variants"][variant].get("finetune_from")
    if source not in config["variants"]:  # a released model, a checkpoint path or none
        return 0
    own = sum(int(config["training"]["steps"][stage]) for stage in runs[source]["stages"])
    return _steps(source, config, runs) + own


def variant_curves(
    config: Mapping[str, Any], run_files: Mapping[str, str | os.PathLike], out: str | os.PathLike
) -> Path:
    """Draw the training curves of every variant of ``run_files`` (variant → its ``mlflow_run.json``)."""
    runs = {v: json.loads(Path(path).read_text(encoding="utf-8")) for v, path in run_files.items()}
    curves = {
        variant: {
            stage: metric_history(run["tracking_uri"], run["run_id"], list(TRAINING_TERMS))
            for stage, run in record["stages"].items()
            if stage in TRAINING_STAGES
        }
        for variant, record in runs.items()
    }
    offsets = {variant: _steps(variant, config, runs) for variant in runs}
    return training_curves(curves, out, offsets)
