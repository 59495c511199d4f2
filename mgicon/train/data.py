"""Training batches: pairs drawn by the weighted, loss-randomizing sampler, volumes from the data stage.

Inputs are the ``preprocessed.csv`` of each dataset (network-shape volumes in [0, 1]) and the stage's pair lists.
Inverted CT (``1-ct``) is ``1 − ct``.  In finetuning, datasets with ``roi_mask`` (lung-masked COPDGene) have their
images multiplied by their mask.  With ``segmentations``/``loss_masks`` a batch also carries each side's label map
(``network_label``) / mask (``network_mask``), for upstream 1.0.6's Dice term and masked similarity; every scan a
pair list names must then have one.  Every draw of step ``k`` comes from a generator seeded by ``(seed, k)``, so a
resumed run draws exactly what an uninterrupted one would.

``inputs_from_loss=True`` reproduces the Erratum's bug on purpose (Appendix B): the network inputs are overwritten by
the loss images, so under loss mode ``F`` the network only ever sees pairs of one modality.  The sampler's draws are
unchanged; the recorded samples name what the network saw (input modalities = loss modalities).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

import numpy as np
import torch

from mgicon.data.build import read_preprocessed
from mgicon.data.manifest import read_csv
from mgicon.data.registry import INVERTED_CT, DatasetSpec
from mgicon.data.sampler import PairSampler, Sample
from mgicon.io.itk import read_image, to_array

Scan = tuple[str, str]


@dataclass
class Batch:
    """Network inputs and loss images ``(B, 1, D, H, W)`` for both sides, and what was drawn."""

    input_A: torch.Tensor
    input_B: torch.Tensor
    loss_A: torch.Tensor
    loss_B: torch.Tensor
    samples: list[Sample]
    seg_A: torch.Tensor | None = None
    seg_B: torch.Tensor | None = None
    mask_A: torch.Tensor | None = None
    mask_B: torch.Tensor | None = None


class TrainingData:
    """Volumes of one training stage, drawn as batches."""

    def __init__(
        self,
        stage: str,
        registry: Mapping[str, DatasetSpec],
        weights: Mapping[str, float],
        preprocessed: Mapping[str, str],
        pair_lists: Mapping[str, str],
        randomization: str = "B",
        modalities: str = "all",
        seed: int = 0,
        inputs_from_loss: bool = False,
        segmentations: bool = False,
        loss_masks: bool = False,
    ):
        """Raises:
        ValueError: ``segmentations``/``loss_masks`` and a scan of a pair list without a label map / mask.
        """
        self.stage, self.seed = stage, seed
        self.segmentations, self.loss_masks = segmentations, loss_masks
        self.inputs_from_loss = inputs_from_loss
        self.rows: dict[tuple[str, Scan, str], dict[str, str]] = {}
        self._map_paths: dict[tuple[str, Scan, str], str] = {}  # (dataset, scan, network_label/_mask) → file
        self.masked = {n for n in weights if stage == "finetune" and registry[n].roi_mask}
        scan_modalities: dict[str, dict[Scan, tuple[str, ...]]] = {}
        pairs: dict[str, list[tuple[Scan, Scan]]] = {}
        for name in weights:
            spec = registry[name]
            allowed = spec.modalities_in(stage) if modalities == "all" else spec.modalities[:1]
            per_scan: dict[Scan, list[str]] = {}
            for row in read_preprocessed(preprocessed[name]):
                scan = (row["subject"], row["timepoint"])
                self.rows[(name, scan, row["modality"])] = row
                per_scan.setdefault(scan, []).append(row["modality"])
            scan_modalities[name] = {
                scan: tuple(m for m in allowed if m in mods or (m == INVERTED_CT and "ct" in mods))
                for scan, mods in per_scan.items()
            }
            pairs[name] = [
                ((p["moving_subject"], p["moving_timepoint"]), (p["fixed_subject"], p["fixed_timepoint"]))
                for p in read_csv(pair_lists[name])
            ]
            wanted = [("network_label", "label map", "dice_loss_weight > 0")] if segmentations else []
            wanted += [("network_mask", "mask", "loss_function_masking")] if loss_masks else []
            for column, what, why in wanted:
                for scan in sorted({scan for pair in pairs[name] for scan in pair}):
                    named = [self.rows[(name, scan, m)].get(column) for m in per_scan.get(scan, ())]
                    if not any(named):
                        raise ValueError(
                            f"{preprocessed[name]}: scan {'/'.join(scan)} of dataset {name} has no {what}; "
                            f"{why} needs one for every training scan"
                        )
                    self._map_paths[(name, scan, column)] = next(path for path in named if path)
        randomized = {n: registry[n].label_randomization for n in weights}
        self.sampler = PairSampler(pairs, weights, scan_modalities, randomized, randomization, seed)
        self._cache: dict[tuple[str, Scan, str], torch.Tensor] = {}

    def volume(self, dataset: str, scan: Scan, modality: str) -> torch.Tensor:
        """A network-shape volume ``(1, D, H, W)``; ``1-ct`` is derived from ``ct``; ROI masks applied."""
        key = (dataset, scan, modality)
        if key not in self._cache:
            if modality == INVERTED_CT:
                self._cache[key] = 1.0 - self.volume(dataset, scan, "ct")
                return self._cache[key]
            row = self.rows[key]
            array = to_array(read_image(row["network_image"])).astype(np.float32)
            if dataset in self.masked and row.get("network_mask"):
                array = array * (to_array(read_image(row["network_mask"])) > 0)
            self._cache[key] = torch.from_numpy(array)[None]
        return self._cache[key]

    def side_map(self, dataset: str, scan: Scan, column: str) -> torch.Tensor:
        """The scan's label map (``network_label``) or mask (``network_mask``) on the network grid, ``(1, D, H, W)``
        float (mask: 0/1), from the first of its modalities that names one."""
        key = (dataset, scan, column)
        if key not in self._cache:
            array = to_array(read_image(self._map_paths[key])).astype(np.float32)
            if column == "network_mask":
                array = (array > 0).astype(np.float32)
            self._cache[key] = torch.from_numpy(array)[None]
        return self._cache[key]

    def batch(self, step: int, size: int) -> Batch:
        """The ``size`` draws of training step ``step`` (a pure function of seed and step)."""
        self.sampler.rng = np.random.default_rng([self.seed, step])
        samples = self.sampler.draws(size)
        if self.inputs_from_loss:
            samples = [replace(s, input_modalities=s.loss_modalities) for s in samples]

        def stack(which: str, side: int) -> torch.Tensor:
            return torch.stack(
                [self.volume(s.dataset, s.moving if side == 0 else s.fixed, getattr(s, which)[side]) for s in samples]
            )

        def maps(column: str, side: int) -> torch.Tensor:
            return torch.stack([self.side_map(s.dataset, s.moving if side == 0 else s.fixed, column) for s in samples])

        return Batch(
            stack("input_modalities", 0),
            stack("input_modalities", 1),
            stack("loss_modalities", 0),
            stack("loss_modalities", 1),
            samples,
            *((maps("network_label", 0), maps("network_label", 1)) if self.segmentations else (None, None)),
            *((maps("network_mask", 0), maps("network_mask", 1)) if self.loss_masks else (None, None)),
        )
