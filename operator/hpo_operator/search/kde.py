"""Density-ratio search as in BOHB (Falkner et al., ICML 2018) and TPE.

At the highest fidelity level holding enough observations (for ``FOCUSED``,
below the top level, only one whose ranks are seen to agree with the top's),
the trials split into good (the best ``gamma`` share) and bad; a
product-kernel density is fitted to each (Gaussian kernels on numeric
columns, Aitchison-Aitken kernels on categorical ones), and the candidate
with the largest ``l(x) / g(x)`` among draws from ``l`` is tried next; in
simulation, the table's unused row nearest to it (as the peer benchmark holds
Syne Tune's BOHB to a table's rows). How the densities are sized, smoothed
and drawn from is a :class:`KdeRecipe`, chosen by the scheduler: ``FOCUSED`` (each density mixed
with the uniform prior as TPE does, and trials still running counted as bad
until they report at that level, Optuna's "constant liar", which spreads
simultaneous suggestions apart) or ``BOHB`` (BOHB's own sizes, bandwidths and
wider draws).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy.special import logsumexp

from hpo_operator.rank_agreement import MAX_EVIDENCE, MIN_AGREEMENT, MIN_PAIRS, lower_bound, rank_correlation
from hpo_operator.search.features import Columns
from hpo_operator.search.model_based import ModelSearcher

MAX_BAD = 256  # densities over more points cost time and change little
CATEGORY_BANDWIDTH = 0.2  # Aitchison-Aitken weight: the chance a kernel moves a category elsewhere
MIN_SCOTT_BANDWIDTH = 0.1  # Scott's rule on a handful of near-identical points gives kernels too narrow to move


@dataclass(frozen=True)
class KdeRecipe:
    """How the densities are fitted and searched. Two recipes are used (:func:`recipe_for`;
    docs/schedulers.md, "The kde under ASHA"): :data:`BOHB` under ASHA's promotion type, which pauses
    a wrong guess at its first rung and so gains from wider draws; :data:`FOCUSED` under every other
    scheduler (the default's among them)."""

    name: str
    bandwidth: Optional[float]  # one Gaussian sd for every numeric column, or None: Scott's rule per column
    uniform_prior: bool  # mix each density with the uniform prior (TPE), so no region has density 0
    widen: float  # draws from l use the bandwidths times this (BOHB's bandwidth_factor)
    draws: int  # candidates drawn from l per suggestion
    running_as_bad: bool  # running trials count as bad (Optuna's constant liar)
    bohb_sizes: bool  # good set max(d, 15%), fitted only where good and bad both hold more than d points
    verified_levels: bool  # below the top level, fit only where that level's ranks agree with the top's


FOCUSED = KdeRecipe("focused", bandwidth=0.1, uniform_prior=True, widen=1.0, draws=256, running_as_bad=True,
                    bohb_sizes=False, verified_levels=True)
# BOHB as Syne Tune 0.13 runs it (its MultiFidelityKernelDensityEstimator), but for the random share,
# which stays the manifest's randomFraction (0.2 measured as well as BOHB's 1/3 under ASHA).
BOHB = KdeRecipe("bohb", bandwidth=None, uniform_prior=False, widen=3.0, draws=64, running_as_bad=False,
                 bohb_sizes=True, verified_levels=False)


def recipe_for(algorithm: str, type: str = "promotion") -> KdeRecipe:
    """The recipe under a scheduler (its ``algorithm`` and ``type``). Under ASHA's promotion type a wrong
    guess costs one rung and then waits paused, so BOHB's wider draws pay; under the default (adaptive)
    scheduler, FIFO or Hyperband, whose trials partly run to the end, and under ASHA's stopping type,
    exploiting the good points harder measured better (docs/schedulers.md, "The kde under ASHA")."""
    return BOHB if (algorithm, type) == ("asha", "promotion") else FOCUSED


@dataclass(frozen=True)
class _Density:
    points: np.ndarray  # (n, d)
    bandwidth: np.ndarray  # (d,): Gaussian sd for numeric columns, Aitchison-Aitken weight for categorical ones
    columns: Columns
    uniform_prior: bool = True

    @staticmethod
    def fit(points: np.ndarray, columns: Columns, recipe: KdeRecipe) -> "_Density":
        if recipe.bandwidth is not None:
            # One bandwidth for every numeric column (they all span [0, 1]): Scott's rule on the handful
            # of good points gave kernels too wide or too narrow to exploit what was learned when every
            # trial is trained far (on the synthetic function of tests/unit/test_model_search.py, 0.28
            # against 0.16 median).
            numeric = np.full(len(columns.levels), recipe.bandwidth)
        else:
            n, d = points.shape
            scott = points.std(axis=0) * n ** (-1.0 / (d + 4))
            numeric = np.maximum(scott, MIN_SCOTT_BANDWIDTH)
        return _Density(points, np.where(columns.numeric, numeric, CATEGORY_BANDWIDTH), columns,
                        recipe.uniform_prior)

    def log_pdf(self, x: np.ndarray) -> np.ndarray:
        """Log density at each row of ``x``: the kernel mixture, with the uniform prior as one more
        component where the recipe asks for it."""
        n = len(self.points)
        log_k = np.zeros((len(x), n))
        for j, levels in enumerate(self.columns.levels):
            diff = x[:, j:j + 1] - self.points[None, :, j]
            bw = self.bandwidth[j]
            if levels == 0:
                log_k += -0.5 * (diff / bw) ** 2 - np.log(bw * np.sqrt(2 * np.pi))
            else:
                same = np.abs(diff) < 0.5
                log_k += np.where(same, np.log(1 - bw), np.log(bw / max(levels - 1, 1))) + np.log(levels)
        if not self.uniform_prior:
            return logsumexp(log_k, axis=1) - np.log(n)
        prior = np.zeros((len(x), 1))  # the uniform density on the unit cube (categories: 1/levels * levels)
        return logsumexp(np.hstack([log_k, prior]), axis=1) - np.log(n + 1)

    def sample(self, rng: np.random.Generator, count: int, widen: float) -> np.ndarray:
        """Draws from the kernels, bandwidths times ``widen`` (BOHB's ``bandwidth_factor``)."""
        centres = self.points[rng.integers(len(self.points), size=count)].copy()
        for j, levels in enumerate(self.columns.levels):
            if levels == 0:
                centres[:, j] = np.clip(centres[:, j] + rng.normal(0, self.bandwidth[j] * widen, count), 0, 1)
            else:
                flip = rng.random(count) < min(self.bandwidth[j] * widen, 1.0)
                centres[flip, j] = rng.integers(levels, size=int(flip.sum()))
        return centres


@dataclass(frozen=True)
class _Model:
    good: _Density
    bad: _Density


class DensityRatioSearcher(ModelSearcher):
    """BOHB-style searcher; see the module docstring."""

    def __init__(self, *args, gamma: float = 0.15, recipe: KdeRecipe = FOCUSED,
                 min_agreement: float = MIN_AGREEMENT, **kwargs):
        kwargs.setdefault("n_candidates", recipe.draws)
        super().__init__(*args, **kwargs)
        self.gamma = gamma
        self.recipe = recipe
        self.min_agreement = min_agreement  # the manifest's scheduler.minAgreement: one bar for rungs and models
        self.dims = len(self.candidates.columns.levels)

    def good_count(self, n: int) -> Optional[int]:
        """How many of ``n`` observations at a level are good, or None if that is too few for a model."""
        if self.recipe.bohb_sizes:
            n_good = max(self.dims, int(self.gamma * n))
            return n_good if n_good > self.dims and n - n_good > self.dims else None
        return max(2, int(np.ceil(self.gamma * n))) if n >= self.dims + 2 else None

    def fit_level(self) -> Optional[int]:
        """The highest fidelity level with enough observations for a model (and, with the recipe's
        ``verified_levels``, below the top level, ranks seen to agree with the top's), or None."""
        for level in reversed(self.data.levels):
            if self.good_count(len(self.data.by_level[level])) is not None and self._may_fit_at(level):
                return level
        return None

    def _may_fit_at(self, level: int) -> bool:
        """Where early epochs rank configurations unlike the last, a model of them points the search
        at the wrong region, and random draws do better (docs/schedulers.md, "Four more tuning tables,
        and a model only where its fidelity agrees"). So a lower level is fitted on only once at least
        ``MIN_PAIRS`` trials observed there also reached the top and their ranks agree there, by the
        adaptive scheduler's measure for a rung it trusts and its bar (``min_agreement``); until then the
        draw falls to a level above, or to random."""
        top = self.data.levels[-1]
        if not self.recipe.verified_levels or level == top:
            return True
        here, at_top = self.data.by_level[level], self.data.by_level[top]
        newest_first = (t for t in reversed(at_top) if t in here)  # dicts keep arrival order
        ids = list(itertools.islice(newest_first, MAX_EVIDENCE))
        if len(ids) < MIN_PAIRS:
            return False
        rho = rank_correlation(np.array([here[t] for t in ids]), np.array([at_top[t] for t in ids]))
        return lower_bound(rho, len(ids)) >= self.min_agreement

    def fit(self, pending: list[int]) -> Optional[_Model]:
        level = self.fit_level()
        if level is None:
            return None
        observed = self.data.by_level[level]
        ids = sorted(observed, key=lambda t: (observed[t], t))
        n_good = self.good_count(len(ids))
        good = ids[:n_good]
        bad = ids[n_good:]
        if self.recipe.running_as_bad:
            bad += [t for t in pending if t not in observed]
        bad = sorted(bad)[-MAX_BAD:]  # the most recent trials when there are many
        columns = self.candidates.columns
        return _Model(_Density.fit(np.array([self.x[t] for t in good]), columns, self.recipe),
                      _Density.fit(np.array([self.x[t] for t in bad]), columns, self.recipe))

    def score(self, model: _Model, x: np.ndarray) -> np.ndarray:
        return model.good.log_pdf(x) - model.bad.log_pdf(x)

    def propose(self, model: _Model, rng: np.random.Generator) -> np.ndarray:
        return self.candidates.snap(model.good.sample(rng, self.n_candidates, self.recipe.widen))

    def pick_row(self, model: _Model, rng: np.random.Generator, unused: np.ndarray) -> int:
        """The unused row nearest to the best draw from ``l``: the algorithm of a continuous space. Scoring
        every row instead takes the ratio's maximum where ``g`` is thinnest, which is often a row far from
        every good point (an empty corner of the space, where ``l/g`` tends to (bad + 1) / (good + 1))."""
        draws = model.good.sample(rng, self.n_candidates, self.recipe.widen)
        best = draws[int(np.argmax(self.score(model, draws)))]
        gap = np.abs(self.candidates.x[unused] - best)
        distance = np.where(self.candidates.columns.numeric, gap ** 2, (gap >= 0.5).astype(float)).sum(axis=1)
        return int(unused[int(np.argmin(distance))])


__all__ = ["BOHB", "FOCUSED", "DensityRatioSearcher", "KdeRecipe", "recipe_for"]
