"""Evaluate one method in one setting on one test dataset: ``results/eval/{method}/{io}/{dataset}.csv``.

One row per registered pair (:data:`EVAL_COLUMNS`): the pair, whether it was ROI-masked, the dataset's metric,
Dice (fraction), mTRE (mm), % negative Jacobian, the unregistered Dice/mTRE, and the seconds of the registration
(scoring excluded).  Finished pairs are appended to a hidden partial file (rewritten atomically after every pair)
tagged with the method's fingerprint, so an interrupted evaluation resumes where it stopped and never mixes in
results of another checkpoint or setting.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from mgicon.data.manifest import read_csv, write_csv
from mgicon.data.registry import DatasetSpec
from mgicon.evaluate.methods import IdentityMethod, Method
from mgicon.evaluate.scoring import score
from mgicon.io import itk as itkio

PAIR_KEY = (
    "dataset", "moving_subject", "moving_timepoint", "moving_modality",
    "fixed_subject", "fixed_timepoint", "fixed_modality", "masked",
)
EVAL_COLUMNS = (
    "method", "io", *PAIR_KEY, "metric", "dice", "mtre", "negative_jacobian_percent",
    "initial_dice", "initial_mtre", "seconds",
)


def pair_key(row: Mapping[str, object]) -> tuple[str, ...]:
    return tuple(str(row.get(k, "")) for k in PAIR_KEY)


def partial_path(out_csv: str | os.PathLike) -> Path:
    out = Path(out_csv)
    return out.with_name(f".{out.name}.partial")


def select_pairs(pair_rows: Sequence[Mapping[str, str]], spec: DatasetSpec, max_pairs: int | None = None) -> list[dict]:
    """The pairs to evaluate: every row of the test pair list (at most ``max_pairs`` per modality pair, in list
    order) under each of the dataset's ``evaluation.masked`` conditions (default: unmasked only)."""
    counts: dict[tuple[str, str], int] = {}
    chosen = []
    for row in pair_rows:
        modalities = (row["moving_modality"], row["fixed_modality"])
        if max_pairs is not None and counts.get(modalities, 0) >= max_pairs:
            continue
        counts[modalities] = counts.get(modalities, 0) + 1
        chosen.append(row)
    conditions = [bool(m) for m in spec.evaluation["masked"]]
    return [{**row, "masked": "1" if masked else "0"} for masked in conditions for row in chosen]


def example_pair(pairs: Sequence[Mapping[str, str]]) -> Mapping[str, str] | None:
    """The pair shown in the figures: the first multimodal unmasked pair, else the first pair."""
    for pair in pairs:
        if pair["moving_modality"] != pair["fixed_modality"] and pair["masked"] == "0":
            return pair
    return pairs[0] if pairs else None


def _scans(preprocessed: Iterable[Mapping[str, str]]) -> dict[tuple[str, str, str], Mapping[str, str]]:
    return {(r["subject"], r["timepoint"], r["modality"]): r for r in preprocessed}


def _scan(scans, pair: Mapping[str, str], side: str, where: str) -> Mapping[str, str]:
    key = (pair[f"{side}_subject"], pair[f"{side}_timepoint"], pair[f"{side}_modality"])
    if key not in scans:
        raise ValueError(f"{where}: {side} scan {'/'.join(k for k in key if k)} is not in the preprocessed data")
    return scans[key]


def _name(pair: Mapping[str, str], side: str) -> str:
    parts = (pair[f"{side}_subject"], pair[f"{side}_timepoint"], pair[f"{side}_modality"])
    return "/".join(p for p in parts if p)


def _number(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))


def evaluate_pairs(
    method: Method,
    io: str,
    spec: DatasetSpec,
    pairs: Sequence[Mapping[str, str]],
    preprocessed: Sequence[Mapping[str, str]],
    out_csv: str | os.PathLike,
    example_out: str | os.PathLike | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> list[dict]:
    """Register and score every pair (from :func:`select_pairs`), resuming from the partial file; write ``out_csv``
    (and the example pair's transform to ``example_out``) atomically; return the rows."""
    method.check_io(io)
    out_csv = Path(out_csv)
    partial = partial_path(out_csv)
    scans = _scans(preprocessed)
    labels = spec.evaluation.get("labels") or None
    metric = spec.evaluation["metric"]
    fingerprint = f"{method.fingerprint}:{io}"
    done: dict[tuple, dict] = {}
    if partial.is_file():
        for row in read_csv(partial):
            if row.get("fingerprint") == fingerprint:
                done[pair_key(row)] = {k: v for k, v in row.items() if k != "fingerprint"}
        if done:
            log(f"resuming: {len(done)} of {len(pairs)} pairs already evaluated")
    identity = IdentityMethod("identity")
    example = example_pair(pairs)
    rows = []
    for i, pair in enumerate(pairs):
        key = pair_key({**pair, "dataset": spec.name})
        if key in done:
            rows.append(done[key])
            continue
        masked = pair["masked"] == "1"
        moving = _scan(scans, pair, "moving", str(out_csv))
        fixed = _scan(scans, pair, "fixed", str(out_csv))
        result = method.register(moving, fixed, masked, io)
        if example_out and pair is example:
            itkio.write_transform(result.transform, example_out)
        fixed_image = itkio.read_image(fixed["image"])
        scores = score(result.transform, fixed, moving, fixed_image, labels)
        initial = score(identity.register(moving, fixed, masked, "noio").transform, fixed, moving, fixed_image, labels)
        row = {
            "method": method.name, "io": io, **dict(zip(PAIR_KEY, key)), "metric": metric,
            "dice": _number(scores.dice), "mtre": _number(scores.mtre),
            "negative_jacobian_percent": _number(scores.negative_jacobian_percent),
            "initial_dice": _number(initial.dice), "initial_mtre": _number(initial.mtre),
            "seconds": f"{result.seconds:.4f}",
        }
        rows.append(row)
        done[key] = row
        write_csv([{**r, "fingerprint": fingerprint} for r in done.values()], partial, (*EVAL_COLUMNS, "fingerprint"))
        main = row["mtre"] if metric == "landmarks" else row["dice"]
        initial_main = row["initial_mtre"] if metric == "landmarks" else row["initial_dice"]
        log(f"[{i + 1}/{len(pairs)}] {_name(pair, 'moving')} → {_name(pair, 'fixed')}{' (masked)' if masked else ''}: "
            f"{metric} {main} (unregistered {initial_main}), %J<0 {row['negative_jacobian_percent']}, "
            f"{result.seconds:.2f} s")
    if example_out and example is not None and not Path(example_out).is_file():  # it finished before a resume
        moving = _scan(scans, example, "moving", str(out_csv))
        fixed = _scan(scans, example, "fixed", str(out_csv))
        itkio.write_transform(method.register(moving, fixed, example["masked"] == "1", io).transform, example_out)
    write_csv(rows, out_csv, EVAL_COLUMNS)
    partial.unlink(missing_ok=True)
    return rows


def summary_metrics(rows: Sequence[Mapping[str, str]]) -> dict[str, float]:
    """Means per modality pair (``dice/t1w-t2w``, ``mtre/ct-ct-masked``, …) and overall, for MLflow."""
    groups: dict[str, list[Mapping[str, str]]] = {}
    for row in rows:
        tag = f"{row['moving_modality']}-{row['fixed_modality']}" + ("-masked" if row["masked"] == "1" else "")
        groups.setdefault(tag, []).append(row)
        groups.setdefault("all", []).append(row)
    out: dict[str, float] = {}
    for tag, members in groups.items():
        for column in ("dice", "mtre", "negative_jacobian_percent", "seconds", "initial_dice", "initial_mtre"):
            values = [float(r[column]) for r in members if r.get(column) not in (None, "")]
            if values:
                out[f"{column}/{tag}"] = sum(values) / len(values)
    out["pairs"] = float(len(rows))
    return out
