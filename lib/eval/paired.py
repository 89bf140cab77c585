"""Is a difference more than noise? A paired bootstrap over the queries, and over the seeds.

1-d (one model a side): the queries resampled. 2-d (seeds x queries): Owen's two-way "pigeonhole"
bootstrap (Ann. Appl. Stat. 1(2), 2007), wide-side (the seed-by-query interaction counts twice); a
one-row side (zero-shot) is paired with every seed. Interval, noise and MDE: docs/results.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
SEED = 0
MDE_FACTOR = 2.8  # z(0.975) + z(0.8): 5 % two-sided, 80 % power


@dataclass(frozen=True)
class Difference:
    """mean(b) - mean(a) over the same queries (and seeds), with its bootstrap interval."""

    delta: float
    low: float
    high: float
    queries: int
    seeds: int = 1
    se: float = float("nan")  # the bootstrap's standard error of delta

    @property
    def is_noise(self) -> bool:
        return self.low <= 0.0 <= self.high

    @property
    def mde(self) -> float:
        return MDE_FACTOR * self.se

    def __str__(self) -> str:
        return f"{self.delta:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def paired_difference(ap_a: np.ndarray, ap_b: np.ndarray, *, resamples: int = RESAMPLES, seed: int = SEED,
                      level: float = 0.95) -> Difference:
    """The change from a to b in mean AP, with the `level` percentile interval of the bootstrap
    (1-d: per query; 2-d: seeds x queries, the module docstring)."""
    a, b = np.asarray(ap_a, dtype=np.float64), np.asarray(ap_b, dtype=np.float64)
    if a.ndim == 1 and b.ndim == 1:
        if a.shape != b.shape or not len(a):
            raise ValueError(f"paired scores need two equally long 1-d arrays, got {a.shape} and {b.shape}")
        diff = b - a
        picks = np.random.default_rng(seed).integers(0, len(diff), size=(resamples, len(diff)))
        means = diff[picks].mean(axis=1)
        return _summary(diff, means, level, seeds=1)
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not a.shape[1]:
        raise ValueError(f"paired scores need seeds x queries arrays over the same queries, got {a.shape} "
                         f"and {b.shape}")
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(f"paired seeds: {a.shape[0]} against {b.shape[0]} (the same seeds, or one row)")
    diff = b - a  # seeds x queries (a one-row side broadcast to the other's seeds)
    n_seeds, n_queries = diff.shape
    rng = np.random.default_rng(seed)
    seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=resamples)
    query_counts = rng.multinomial(n_queries, np.full(n_queries, 1 / n_queries), size=resamples)
    means = ((seed_counts @ diff) * query_counts).sum(axis=1) / (n_seeds * n_queries)
    return _summary(diff, means, level, seeds=n_seeds)


def _summary(diff: np.ndarray, means: np.ndarray, level: float, seeds: int) -> Difference:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Difference(float(diff.mean()), float(low), float(high), diff.shape[-1], seeds,
                      float(means.std(ddof=1)))
