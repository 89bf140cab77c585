"""Is a difference more than noise? The paired bootstrap over queries.

Two rankings of the same queries give two per-query AP arrays; their difference of means is the
change, and resampling the queries (the same resample for both, hence paired) 2,000 times with a
fixed seed gives its 95 % interval. An interval that contains 0 is noise at this many queries.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
SEED = 0


@dataclass(frozen=True)
class Difference:
    """mean(b) - mean(a) over the same queries, with its paired bootstrap interval."""

    delta: float
    low: float
    high: float
    queries: int

    @property
    def is_noise(self) -> bool:
        return self.low <= 0.0 <= self.high

    def __str__(self) -> str:
        return f"{self.delta:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def paired_difference(ap_a: np.ndarray, ap_b: np.ndarray, *, resamples: int = RESAMPLES, seed: int = SEED,
                      level: float = 0.95) -> Difference:
    """The change from a to b in mean AP, with the `level` percentile interval of the bootstrap."""
    a, b = np.asarray(ap_a, dtype=np.float64), np.asarray(ap_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"paired scores need two equally long 1-d arrays, got {a.shape} and {b.shape}")
    diff = b - a
    picks = np.random.default_rng(seed).integers(0, len(diff), size=(resamples, len(diff)))
    means = diff[picks].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Difference(float(diff.mean()), float(low), float(high), len(diff))
