"""How well one fidelity's ranks agree with a later one's: Spearman's correlation and a cautious bound.

Shared by the adaptive scheduler (which judges trials only at rungs that agree) and the kde searcher
(which fits a model on a lower fidelity only where it agrees), so both trust a fidelity by one measure.
Values are rank keys (smaller is better; non-finite for a diverged trial).
"""

from __future__ import annotations

import math

import numpy as np


def finite_keys(a: np.ndarray) -> np.ndarray:
    """Rank keys with non-finite ones (diverged) tied at the worst finite value plus one."""
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros_like(a)
    return np.where(finite, a, a[finite].max() + 1)


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


def agrees(here: np.ndarray, later: np.ndarray, min_agreement: float) -> bool:
    """Whether the ranks of ``here`` confidently agree with those of ``later`` (paired arrays): the
    lower bound of their correlation reaches ``min_agreement``. No spread at either end agrees with
    nothing."""
    a, b = finite_keys(here), finite_keys(later)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return False
    return lower_bound(spearman(a, b), len(a)) >= min_agreement
