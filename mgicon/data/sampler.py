"""Weighted pair sampling with similarity-loss randomization (Sec. 3.2, Eq. 4).

A draw picks a dataset with probability ∝ its stage weight, a pair of that dataset uniformly, then for each side
the **network-input modality** uniformly among the scan's modalities.  The **loss modalities** are drawn
*independently* of the inputs (never copied over them — the Erratum's bug) for datasets with label randomization:

* ``B`` — no randomization: loss images are the network inputs;
* ``F`` — one loss modality, random, the same on both sides;
* ``R`` — each side's loss modality random and independent.

Datasets without label randomization always use the inputs as loss images.  In pretraining, datasets with
``ct_inversion`` offer inverted CT (``1-ct``) as one more modality.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from mgicon.vocabulary import RANDOMIZATIONS

Scan = tuple[str, str]


@dataclass(frozen=True)
class Sample:
    """One training draw: which scans, which modalities feed the network and which the similarity loss."""

    dataset: str
    moving: Scan
    fixed: Scan
    input_modalities: tuple[str, str]
    loss_modalities: tuple[str, str]


class PairSampler:
    """Draws :class:`Sample` s reproducibly from a seeded generator."""

    def __init__(
        self,
        pairs: Mapping[str, Sequence[tuple[Scan, Scan]]],
        weights: Mapping[str, float],
        scan_modalities: Mapping[str, Mapping[Scan, Sequence[str]]],
        randomized: Mapping[str, bool],
        mode: str = "B",
        seed: int = 0,
    ):
        if mode not in RANDOMIZATIONS:
            raise ValueError(f"loss randomization mode must be one of {RANDOMIZATIONS}, got {mode!r}")
        self.names = [n for n in pairs if pairs[n] and weights.get(n, 0) > 0]
        if not self.names:
            raise ValueError("no dataset with pairs and a positive weight to sample from")
        w = np.array([weights[n] for n in self.names], dtype=np.float64)
        self.probabilities = w / w.sum()
        self.pairs = pairs
        self.scan_modalities = scan_modalities
        self.randomized = randomized
        self.mode = mode
        self.rng = np.random.default_rng(seed)

    def _choice(self, options: Sequence[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def draw(self) -> Sample:
        name = self.names[int(self.rng.choice(len(self.names), p=self.probabilities))]
        moving, fixed = self.pairs[name][int(self.rng.integers(len(self.pairs[name])))]
        mods_m = list(self.scan_modalities[name][moving])
        mods_f = list(self.scan_modalities[name][fixed])
        inputs = (self._choice(mods_m), self._choice(mods_f))
        if not self.randomized.get(name, False) or self.mode == "B":
            losses = inputs
        elif self.mode == "F":
            shared = [m for m in mods_m if m in mods_f]
            if not shared:
                raise ValueError(f"{name}: scans {moving} and {fixed} share no modality for loss mode F")
            loss = self._choice(shared)
            losses = (loss, loss)
        else:
            losses = (self._choice(mods_m), self._choice(mods_f))
        return Sample(name, moving, fixed, inputs, losses)

    def draws(self, n: int) -> list[Sample]:
        return [self.draw() for _ in range(n)]
