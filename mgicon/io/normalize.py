"""Per-modality intensity normalisation to [0, 1] (Sec. 3.3 of the paper; upstream's CLI preprocessing).

* ``ct``:  clip to a HU window (default [−1000, 1000]) and map it linearly onto [0, 1].
* ``mri``: clip between the image minimum and its 99th percentile (the k-th smallest value with
  k = ⌊0.99·N⌋, as upstream) and map that range onto [0, 1]; ``quantiles=(lo, hi)`` uses both ends as
  quantiles instead.

Arrays are numpy float32 in any axis order (the statistics are order-free).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

MODALITIES = ("ct", "mri")
CT_WINDOW = (-1000.0, 1000.0)


def quantile(values: np.ndarray, q: float) -> float:
    """The k-th smallest value, k = clamp(⌊q·N⌋, 1, N) (1-based): upstream's ``torch.kthvalue`` quantile."""
    flat = values.reshape(-1)
    k = max(1, min(int(q * flat.size), flat.size))
    return float(np.partition(flat, k - 1)[k - 1])


def intensity_range(
    array: np.ndarray,
    modality: str,
    ct_window: Sequence[float] | None = None,
    quantiles: Sequence[float] | None = None,
) -> tuple[float, float]:
    """The intensity range ``(lo, hi)`` that maps onto [0, 1] for ``modality``."""
    if modality == "ct":
        lo, hi = (float(v) for v in (ct_window or CT_WINDOW))
    elif modality == "mri":
        if quantiles is not None:
            lo, hi = quantile(array, quantiles[0]), quantile(array, quantiles[1])
        else:
            lo, hi = float(array.min()), quantile(array, 0.99)
    else:
        raise ValueError(f"unknown modality {modality!r}; choose from {', '.join(MODALITIES)}")
    if not hi > lo:
        raise ValueError(f"empty intensity range [{lo:g}, {hi:g}] for modality {modality}")
    return lo, hi


def normalize(
    array: np.ndarray,
    modality: str,
    ct_window: Sequence[float] | None = None,
    quantiles: Sequence[float] | None = None,
) -> np.ndarray:
    """``array`` clipped to its modality's range and mapped onto [0, 1] (float32)."""
    lo, hi = intensity_range(array, modality, ct_window, quantiles)
    out = (np.clip(array.astype(np.float32), lo, hi) - np.float32(lo)) / np.float32(hi - lo)
    return out.astype(np.float32)
