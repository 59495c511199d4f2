"""Statistics of the tables: bootstrap confidence intervals of a mean and a paired significance test.

NaNs mean "not available" and are dropped (pairwise in :func:`paired_test`); results are deterministic (seeded).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

NAN = float("nan")


def _finite(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[~np.isnan(arr)]


def bootstrap_ci(
    values: Sequence[float], level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean: ``(low, high)``; ``(x, x)`` for one value, NaNs if none."""
    x = _finite(values)
    if x.size == 0:
        return NAN, NAN
    if x.size == 1 or np.all(x == x[0]):
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def paired_test(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired ``a`` vs ``b``.

    1.0 when every difference is zero (identical results), NaN with fewer than two complete pairs.
    """
    from scipy.stats import wilcoxon

    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired_test: {x.size} vs {y.size} values; pairs must match")
    keep = ~(np.isnan(x) | np.isnan(y))
    d = x[keep] - y[keep]
    if d.size < 2:
        return NAN
    if np.all(d == 0):
        return 1.0
    p = float(wilcoxon(d, alternative="two-sided").pvalue)
    return 1.0 if math.isnan(p) else p
