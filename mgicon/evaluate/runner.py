"""Evaluate one method in one setting on one test dataset: ``results/eval/{method}/{io}/{dataset}.csv``.

One row per registered pair (:data:`~mgicon.vocabulary.EVAL_COLUMNS`): the pair, whether it was ROI-masked, the
dataset's metric, Dice (fraction), mTRE (mm), % negative Jacobian, the unregistered Dice/mTRE, and the seconds of the
registration (scoring excluded).  Finished pairs are appended to a hidden partial file (rewritten atomically after
every pair) tagged with the method's fingerprint, so an interrupted evaluation resumes where it stopped and never
mixes in results of another checkpoint or setting.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

from mgicon.data.manifest import read_csv, write_csv
from mgicon.data.registry import DatasetSpec
from mgicon.evaluate.methods import IdentityMethod, Method
from mgicon.evaluate.scoring import score
from mgicon.io import itk as itkio
from mgicon.records import SCORE_COLUMNS, EvalRecord, PairRecord, ScanRecord, format_float, parse_float
from mgicon.vocabulary import EVAL_COLUMNS, IDENTITY, NOIO


def partial_path(out_csv: str | os.PathLike) -> Path:
    out = Path(out_csv)
    return out.with_name(f".{out.name}.partial")


def select_pairs(pairs: Sequence[PairRecord], spec: DatasetSpec, max_pairs: int | None = None) -> list[PairRecord]:
    """The pairs to evaluate: every pair of the test pair list (at most ``max_pairs`` per modality pair, in list
    order) under each of the dataset's ``evaluation.masked`` conditions (default: unmasked only)."""
    counts: dict[tuple[str, str], int] = {}
    chosen = []
    for pair in pairs:
        modalities = (pair.moving_modality, pair.fixed_modality)
        if max_pairs is not None and counts.get(modalities, 0) >= max_pairs:
            continue
        counts[modalities] = counts.get(modalities, 0) + 1
        chosen.append(pair)
    return [pair.with_masked(bool(masked)) for masked in spec.evaluation["masked"] for pair in chosen]


def example_pair(pairs: Sequence[PairRecord]) -> PairRecord | None:
    """The pair shown in the figures: the first multimodal unmasked pair, else the first pair."""
    for pair in pairs:
        if pair.multimodal and not pair.masked:
            return pair
    return pairs[0] if pairs else None


def _scan(scans: dict[tuple[str, str, str], ScanRecord], pair: PairRecord, side: str, where: str) -> ScanRecord:
    key = pair.scan_key(side)
    if key not in scans:
        raise ValueError(f"{where}: {side} scan {pair.name(side)} is not in the preprocessed data")
    return scans[key]


def _resumable(partial: Path, fingerprint: str) -> dict[PairRecord, EvalRecord]:
    """The partial file's records of this method and setting (``fingerprint``), by pair."""
    done: dict[PairRecord, EvalRecord] = {}
    if partial.is_file():
        for line, row in enumerate(read_csv(partial), start=2):
            if row.get("fingerprint") == fingerprint:
                record = EvalRecord.from_row(row, f"{partial}:{line}")
                done[record.pair] = record
    return done


def evaluate_pairs(
    method: Method,
    io: str,
    spec: DatasetSpec,
    pairs: Sequence[PairRecord],
    scans: Iterable[ScanRecord],
    out_csv: str | os.PathLike,
    example_out: str | os.PathLike | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> list[EvalRecord]:
    """Register and score every pair (from :func:`select_pairs`) between the ``scans`` (of ``preprocessed.csv``),
    resuming from the partial file; write ``out_csv`` (and the example pair's transform to ``example_out``)
    atomically; return the records."""
    method.check_io(io)
    out_csv = Path(out_csv)
    partial = partial_path(out_csv)
    by_key = {scan.key: scan for scan in scans}
    labels = spec.evaluation.get("labels") or None
    metric = spec.evaluation["metric"]
    fingerprint = f"{method.fingerprint}:{io}"
    done = _resumable(partial, fingerprint)
    if done:
        log(f"resuming: {len(done)} of {len(pairs)} pairs already evaluated")
    identity = IdentityMethod(IDENTITY)
    example = example_pair(pairs)
    records = []
    for i, pair in enumerate(pairs):
        key = replace(pair, dataset=spec.name)
        if key in done:
            records.append(done[key])
            continue
        moving = _scan(by_key, pair, "moving", str(out_csv))
        fixed = _scan(by_key, pair, "fixed", str(out_csv))
        result = method.register(moving, fixed, pair.masked, io)
        if example_out and pair is example:
            itkio.write_transform(result.transform, example_out)
        fixed_image = itkio.read_image(fixed.image)
        scores = score(result.transform, fixed, moving, fixed_image, labels)
        unregistered = identity.register(moving, fixed, pair.masked, NOIO).transform
        initial = score(unregistered, fixed, moving, fixed_image, labels, folds=False)
        record = EvalRecord(
            method.name,
            io,
            key,
            metric,
            dice=parse_float(scores.dice),
            mtre=parse_float(scores.mtre),
            negative_jacobian_percent=parse_float(scores.negative_jacobian_percent),
            initial_dice=parse_float(initial.dice),
            initial_mtre=parse_float(initial.mtre),
            seconds=round(result.seconds, 4),
        )
        records.append(record)
        done[key] = record
        write_csv(
            [{**r.to_row(), "fingerprint": fingerprint} for r in done.values()], partial, (*EVAL_COLUMNS, "fingerprint")
        )
        log(
            f"[{i + 1}/{len(pairs)}] {pair.name('moving')} → {pair.name('fixed')}{' (masked)' if pair.masked else ''}: "
            f"{metric} {format_float(record.value(metric))} (unregistered {format_float(record.initial(metric))}), "
            f"%J<0 {format_float(record.negative_jacobian_percent)}, {result.seconds:.2f} s"
        )
    if example_out and example is not None and not Path(example_out).is_file():  # it finished before a resume
        moving = _scan(by_key, example, "moving", str(out_csv))
        fixed = _scan(by_key, example, "fixed", str(out_csv))
        itkio.write_transform(method.register(moving, fixed, example.masked, io).transform, example_out)
    write_csv([r.to_row() for r in records], out_csv, EVAL_COLUMNS)
    partial.unlink(missing_ok=True)
    return records


def summary_metrics(records: Sequence[EvalRecord]) -> dict[str, float]:
    """Means per modality pair (``dice/t1w-t2w``, ``mtre/ct-ct-masked``, …) and overall, for MLflow."""
    groups: dict[str, list[EvalRecord]] = {}
    for record in records:
        pair = record.pair
        tag = f"{pair.moving_modality}-{pair.fixed_modality}" + ("-masked" if pair.masked else "")
        groups.setdefault(tag, []).append(record)
        groups.setdefault("all", []).append(record)
    out: dict[str, float] = {}
    for tag, members in groups.items():
        for name in SCORE_COLUMNS:
            values = [v for v in (getattr(r, name) for r in members) if v is not None]
            if values:
                out[f"{name}/{tag}"] = sum(values) / len(values)
    out["pairs"] = float(len(records))
    return out
