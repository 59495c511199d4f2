"""One evaluation job of the pipeline: a method, an IO setting and a test dataset, recorded as an MLflow run."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from mgicon.config import setting
from mgicon.data.build import read_preprocessed
from mgicon.data.registry import load_registry
from mgicon.evaluate.methods import Method, MethodError, make_method
from mgicon.evaluate.runner import evaluate_pairs, select_pairs, summary_metrics
from mgicon.io import itk as itkio
from mgicon.records import EvalRecord, PairRecord, ScanRecord, parse_rows, read_records
from mgicon.vocabulary import BASELINES, NETWORK, NOIO, SYN


def method_kind(config: Mapping[str, Any], method: str) -> str:
    """A baseline's own name (its kind), or ``network`` (a variant or a released checkpoint)."""
    if method in BASELINES:
        return method
    if method in config.get("variants", {}) or method in setting(config, "evaluation.released"):
        return NETWORK
    raise MethodError(f"method {method}: neither identity, ground-truth, syn, a variant nor a released checkpoint")


def released_checkpoint(config: Mapping[str, Any], method: str, allow_download: bool = True) -> Path:
    """The local file of a released checkpoint named in ``evaluation.released`` (downloaded to the cache)."""
    from mgicon.weights import resolve_model

    return resolve_model(str(config["evaluation"]["released"][method]["model"]), allow_download)


def build_method(config: Mapping[str, Any], method: str, checkpoint: str | os.PathLike | None = None) -> Method:
    """The method ``method`` with the settings of ``config["evaluation"]`` (schema defaults where the config, a
    job's slice of the resolved one, lacks them).

    Args:
        checkpoint: a network method's weights: required for a trained variant (the pipeline knows where it wrote
            them); a released checkpoint defaults to its cached file.

    Raises:
        MethodError: an unknown method, or a variant without ``checkpoint``.
    """
    kind = method_kind(config, method)
    seed = int(setting(config, "seed"))
    if kind == SYN:
        return make_method(
            method,
            SYN,
            seed=seed,
            deterministic=bool(setting(config, "evaluation.syn.deterministic")),
            threads=setting(config, "evaluation.syn.threads"),
        )
    if kind != NETWORK:
        return make_method(method, kind)
    released = setting(config, "evaluation.released").get(method)
    input_shape = None
    if checkpoint is None:
        if released is None:
            raise MethodError(f"method {method}: a trained variant needs its checkpoint")
        checkpoint = released_checkpoint(config, method)
    if released is not None and released.get("input_shape"):  # else the checkpoint's own grid (175³ if bare)
        input_shape = tuple(released["input_shape"])
    return make_method(
        method,
        NETWORK,
        checkpoint=checkpoint,
        device=str(setting(config, "evaluation.device")),
        io_iterations=int(setting(config, "evaluation.io_iterations")),
        io_lr=float(setting(config, "evaluation.io_lr")),
        seed=seed,
        bf16=bool(setting(config, "evaluation.bf16")),
        input_shape=input_shape,
        io_lncc_sigma=float(setting(config, "evaluation.io_lncc_sigma")),
        io_dice_weight=float(setting(config, "evaluation.io_dice_weight")),
        keep_orientation=bool(setting(config, "evaluation.keep_orientation")),
        affine=bool(setting(config, "evaluation.affine")),
        affine_metric=str(setting(config, "evaluation.affine_metric")),
    )


def pair_cap(config: Mapping[str, Any], io: str, kind: str | None = None) -> int | None:
    """Test pairs per modality pair: ``max_pairs``, or ``io_max_pairs`` under IO when set (IO costs far more), or
    ``syn.max_pairs`` for SyN (``kind``) when set (seconds a pair on a CPU, where a network takes a fraction)."""
    io_cap = setting(config, "evaluation.io_max_pairs")
    syn_cap = setting(config, "evaluation.syn.max_pairs")
    if kind == SYN and syn_cap is not None:
        return int(syn_cap)
    if io != NOIO and io_cap is not None:
        return int(io_cap)
    return setting(config, "evaluation.max_pairs")


@dataclass(frozen=True)
class DatasetFiles:
    """The files of one test dataset in an evaluation job."""

    pairs_csv: str
    preprocessed_csv: str
    out_csv: str
    example_out: str | None = None


def run_evaluation(
    config: Mapping[str, Any],
    method: str,
    io: str,
    datasets: Mapping[str, DatasetFiles],
    checkpoint: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, list[EvalRecord]]:
    """Evaluate ``method`` under ``io`` on every dataset's test pairs, write their CSVs, and log one MLflow run
    with per-dataset metrics (``{dataset}/dice/t1w-t2w``, …) and the CSVs as artifacts."""
    from mgicon.tracking import config_tracker

    registry = load_registry(config["datasets"])
    built = build_method(config, method, checkpoint)
    built.check_io(io)
    params = {
        "method": method,
        "kind": built.kind,
        "io": io,
        "datasets": sorted(datasets),
        "fingerprint": built.fingerprint,
        "max_pairs": pair_cap(config, io, built.kind),
    }
    if built.kind == "network":
        params.update(checkpoint=str(built.checkpoint), io_iterations=built.io_iterations, io_lr=built.io_lr)
    tracker = config_tracker(
        config, f"eval-{method}-{io}", params=params, tags={"job": "evaluate", "method": method, "io": io}
    )
    results: dict[str, list[EvalRecord]] = {}
    try:
        for name, files in datasets.items():
            spec = registry[name]
            pairs = select_pairs(read_records(files.pairs_csv, PairRecord), spec, pair_cap(config, io, built.kind))
            log(f"{method} / {io} / {name}: {len(pairs)} pairs")
            scans = parse_rows(read_preprocessed(files.preprocessed_csv), ScanRecord, files.preprocessed_csv)
            with itkio.cached_reads():  # each scan is in several pairs
                rows = evaluate_pairs(built, io, spec, pairs, scans, files.out_csv, files.example_out, log)
            results[name] = rows
            tracker.log_metrics({f"{name}/{k}": v for k, v in summary_metrics(rows).items()}, step=0)
            tracker.log_artifact(files.out_csv, f"eval/{name}")
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end()
    return results
