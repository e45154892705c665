"""How well one fidelity's ranks agree with a later one's: Spearman's correlation and a cautious bound.

Shared by the adaptive scheduler (which judges trials only at rungs that agree) and the kde searcher
(which fits a model on a lower fidelity only where it agrees), so both trust a fidelity by one measure.
Values are rank keys (smaller is better; non-finite for a diverged trial).
"""

from __future__ import annotations

import math

import numpy as np

MIN_PAIRS = 8  # pairs a correlation needs before it says anything
MIN_AGREEMENT = 0.5  # the lower bound a fidelity's correlation must reach to be trusted (the manifest's default)
MAX_EVIDENCE = 500  # pairs per measure: the newest, so old evidence fades and cost stays bounded


def average_ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), as Spearman's correlation wants."""
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - (counts - 1) / 2.0))[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (scipy's spearmanr cost 50x more in the scheduler's loop); 0 without
    spread."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else 0.0


def lower_bound(rho: float, n: int) -> float:
    """Lower one-sigma bound of a Spearman correlation over ``n`` pairs (Fisher transform)."""
    if n <= 3:
        return -1.0
    z = math.atanh(min(max(rho, -0.999999), 0.999999))
    return math.tanh(z - 1.06 / math.sqrt(n - 3))


def rank_correlation(here: np.ndarray, later: np.ndarray) -> float:
    """Spearman's correlation of paired rank keys, a diverged (non-finite) value ranking worst; 0 where
    either side has no spread, since such a fidelity tells nothing apart."""
    a, b = _finite_keys(here), _finite_keys(later)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return spearman(a, b)


def _finite_keys(a: np.ndarray) -> np.ndarray:
    """Rank keys with non-finite ones (diverged) tied at the worst finite value plus one."""
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros_like(a)
    return np.where(finite, a, a[finite].max() + 1)
