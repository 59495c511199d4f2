"""The dataset registry: Table 1 of the paper as data, and the sampling weights derived from it.

A registry is the ``datasets`` mapping of a pipeline config (validated by ``workflow/schemas/config.schema.yaml``);
each entry describes one row of Table 1 (a dataset in one role: training or test).

Weights (Sec. 3.3 and upstream's training code):

* **pretraining**: every dataset's pairs get ``regions × C(m + 1, 2)``, the number of modality pairs with
  repetition times the number of anatomical regions, where ``m`` counts the modalities including inverted CT
  (``1 − CT``) when ``ct_inversion`` is on.  All datasets contribute the same number of candidate pairs, so a
  dataset's share of the draws is its weight over the sum of weights.
* **finetuning**: anatomy-balanced: a dataset gets ``Σ_{a ∈ anatomies} max_count / count(a)``, with ``count(a)``
  the number of finetuning datasets covering anatomy ``a``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import comb
from typing import Any, Mapping

from mgicon.config import with_defaults
from mgicon.vocabulary import DATA_STAGES, FINETUNE, PAIRINGS, PRETRAIN

INVERTED_CT = "1-ct"


@dataclass(frozen=True)
class DatasetSpec:
    """One registry entry (one row of Table 1)."""

    name: str
    region: str
    modalities: tuple[str, ...]
    pairing: str
    stages: tuple[str, ...]
    # the schema's defaults (mgicon/config.schema.yaml), filled in by load_registry
    label_randomization: bool
    regions: int
    ct_inversion: bool
    roi_mask: bool
    keep_orientation: bool
    max_pairs: int
    evaluation: Mapping[str, Any]
    table: int | None
    paper: Mapping[str, Any]
    source: Mapping[str, Any] = field(default_factory=dict)  # required by the schema; optional for tests
    anatomies: tuple[str, ...] = ()
    test_modality_pairs: tuple[tuple[str, str], ...] = ()

    def modalities_in(self, stage: str) -> tuple[str, ...]:
        """Modalities drawn in ``stage``: inverted CT is an extra modality in pretraining only."""
        if stage == PRETRAIN and self.ct_inversion and "ct" in self.modalities:
            return (*self.modalities, INVERTED_CT)
        return self.modalities

    def modality_pairs(self) -> tuple[tuple[str, str], ...]:
        """The (moving, fixed) modality pairs evaluated at test time (default: every ordered pair)."""
        if self.test_modality_pairs:
            return self.test_modality_pairs
        return tuple((a, b) for a in self.modalities for b in self.modalities)


def load_registry(datasets: Mapping[str, Mapping[str, Any]]) -> dict[str, DatasetSpec]:
    """Build the registry from the config's ``datasets`` mapping (name → entry)."""
    registry = {}
    for name, entry in datasets.items():
        entry = with_defaults("datasets.*", entry, f"datasets.{name}")
        for key in ("modalities", "stages", "anatomies"):
            if key in entry:
                entry[key] = tuple(entry[key])
        if "test_modality_pairs" in entry:
            entry["test_modality_pairs"] = tuple(tuple(p) for p in entry["test_modality_pairs"])
        entry.setdefault("anatomies", (entry.get("region", "").lower(),))
        spec = DatasetSpec(name=name, **entry)
        unknown = set(spec.stages) - set(DATA_STAGES)
        if unknown:
            raise ValueError(f"dataset {name}: unknown stages {sorted(unknown)}; use {DATA_STAGES}")
        if spec.pairing not in PAIRINGS:
            raise ValueError(f"dataset {name}: pairing {spec.pairing!r} is not one of {PAIRINGS}")
        registry[name] = spec
    return registry


def in_stage(registry: Mapping[str, DatasetSpec], stage: str) -> list[DatasetSpec]:
    return [spec for spec in registry.values() if stage in spec.stages]


def pretrain_weight(spec: DatasetSpec) -> float:
    """``regions × C(m + 1, 2)`` with m the pretraining modalities (inverted CT included)."""
    m = len(spec.modalities_in(PRETRAIN))
    return float(spec.regions * comb(m + 1, 2))


def finetune_weights(specs: list[DatasetSpec]) -> dict[str, float]:
    """Anatomy-balanced weights: ``Σ_a max_count / count(a)`` over each dataset's anatomies."""
    counts: dict[str, int] = {}
    for spec in specs:
        for anatomy in set(spec.anatomies):
            counts[anatomy] = counts.get(anatomy, 0) + 1
    top = max(counts.values(), default=1)
    return {spec.name: float(sum(top / counts[a] for a in set(spec.anatomies))) for spec in specs}


def stage_weights(registry: Mapping[str, DatasetSpec], stage: str) -> dict[str, float]:
    """Per-dataset sampling weight of every dataset used in ``stage`` (test datasets all weigh 1)."""
    specs = in_stage(registry, stage)
    if stage == PRETRAIN:
        return {spec.name: pretrain_weight(spec) for spec in specs}
    if stage == FINETUNE:
        return finetune_weights(specs)
    return {spec.name: 1.0 for spec in specs}


def expected_shares(weights: Mapping[str, float]) -> dict[str, float]:
    """Each dataset's share of the draws in percent."""
    total = sum(weights.values())
    return {name: 100.0 * w / total for name, w in weights.items()} if total else {}
