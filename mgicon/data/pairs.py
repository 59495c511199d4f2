"""Pair lists per stage and dataset, and the per-dataset weights table.

A pair list ``results/pairs/{stage}/{dataset}.csv`` has one row per (moving scan, fixed scan):
``dataset, moving_subject, moving_timepoint, fixed_subject, fixed_timepoint, weight`` and, for ``test``,
``moving_modality, fixed_modality`` (one row per evaluated modality pair).  ``weight`` is the dataset weight spread
over its pairs, so that drawing pairs with probability ∝ weight gives every dataset its intended share.

Pairing: ``intra`` — scans of one subject at different timepoints; ``inter`` — scans of different subjects;
``atlas`` — every scan against the subject named ``atlas`` (moving = atlas).  Training stages use ``split=train``
scans, ``test`` uses ``split=test``.  At most ``max_pairs`` pairs per dataset, drawn without replacement under a
seed.
"""

from __future__ import annotations

import itertools
import random
from typing import Mapping, Sequence

from mgicon.data.manifest import scans
from mgicon.data.registry import DatasetSpec, expected_shares
from mgicon.vocabulary import FINETUNE, PRETRAIN

PAIR_COLUMNS = ("dataset", "moving_subject", "moving_timepoint", "fixed_subject", "fixed_timepoint", "weight")
TEST_COLUMNS = PAIR_COLUMNS + ("moving_modality", "fixed_modality")
WEIGHT_COLUMNS = ("dataset", "pairs", "weight", "expected_share", "paper_share")


def scan_pairs(scan_ids: Sequence[tuple[str, str]], pairing: str) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """All ordered (moving, fixed) scan pairs for a pairing scheme."""
    if pairing == "intra":
        return [(a, b) for a, b in itertools.permutations(scan_ids, 2) if a[0] == b[0]]
    if pairing == "inter":
        return [(a, b) for a, b in itertools.permutations(scan_ids, 2) if a[0] != b[0]]
    if pairing == "atlas":
        atlas = [s for s in scan_ids if s[0] == "atlas"]
        if not atlas:
            raise ValueError("atlas pairing needs a scan whose subject is 'atlas'")
        return [(atlas[0], s) for s in scan_ids if s[0] != "atlas"]
    raise ValueError(f"unknown pairing {pairing!r}")


def make_pairs(
    spec: DatasetSpec, rows: Sequence[Mapping[str, str]], stage: str, weight: float, seed: int = 0
) -> list[dict[str, object]]:
    """The pair list of one dataset in one stage (see the module docstring)."""
    split = "test" if stage == "test" else "train"
    by_scan = scans([r for r in rows if r["split"] == split])
    candidates = scan_pairs(sorted(by_scan), spec.pairing)
    rng = random.Random(f"{seed}:{stage}:{spec.name}")
    if len(candidates) > spec.max_pairs:
        candidates = sorted(rng.sample(candidates, spec.max_pairs))
    out: list[dict[str, object]] = []
    for moving, fixed in candidates:
        base = {
            "dataset": spec.name,
            "moving_subject": moving[0],
            "moving_timepoint": moving[1],
            "fixed_subject": fixed[0],
            "fixed_timepoint": fixed[1],
        }
        if stage == "test":
            for m_mod, f_mod in spec.modality_pairs():
                if m_mod in by_scan[moving] and f_mod in by_scan[fixed]:
                    out.append({**base, "moving_modality": m_mod, "fixed_modality": f_mod})
        else:
            out.append(base)
    for row in out:
        row["weight"] = weight / len(out)
    return out


def weights_table(
    weights: Mapping[str, float], pair_counts: Mapping[str, int], registry: Mapping[str, DatasetSpec], stage: str
) -> list[dict[str, object]]:
    """Rows of ``weights.csv``: each dataset's weight and expected share next to Table 1's published share."""
    shares = expected_shares(weights)
    key = {PRETRAIN: "pretrain_share", FINETUNE: "finetune_share"}.get(stage)
    return [
        {
            "dataset": name,
            "pairs": pair_counts.get(name, 0),
            "weight": f"{w:.6g}",
            "expected_share": f"{shares[name]:.2f}",
            "paper_share": registry[name].paper.get(key, "") if key else "",
        }
        for name, w in weights.items()
    ]
