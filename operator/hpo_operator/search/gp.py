"""A Gaussian process over (configuration, fidelity), as in MOBSTER (Klein et al., 2020).

Every observation at every fidelity level is one data point ``(x, t)`` with
``t = log(resource) / log(max_resource)``; one GP with a Matern-5/2 kernel
(a lengthscale per column, ``t`` included) learns how values change with the
configuration and with training time together, so a trial seen only at its
first rung still tells the model about the final value of its neighbours.
The next trial is the candidate with the largest expected improvement at
``t = 1`` over the best predicted final value of any configuration the fit
saw, per second of training once enough epochs are timed
(:mod:`hpo_operator.search.training_cost`): among configurations about as
promising, the one that trains fastest reaches a result first. The weight
of the seconds fades as trials are trained to the end (cost-cooling, as in
Lee et al., 2020): early on a cheap configuration teaches the model sooner,
later the best configuration is what counts, however slowly it trains.
In a continuous space the candidates are random draws plus draws around
the five configurations predicted best among those the fit saw and the
``TOP_PER_LEVEL`` best observed at each level. Trials still running enter as
their predicted final value ("kriging believer"): their neighbourhood loses
its uncertainty, so simultaneous suggestions spread out.

Values enter as normal scores of their ranks, which keeps diverged runs
(error 1.0, NaN) from dominating the fit. Hyperparameters are refitted by
maximum likelihood when the data has grown by a quarter since the last fit,
on at most ``MAX_POINTS`` points (the highest fidelities first, then the
newest trials).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy.linalg import solve_triangular
from scipy.special import ndtr
from scipy.stats import norm, rankdata
from sortedcontainers import SortedList

from hpo_operator.search.gp_kernel import Hyper, factor, fit_hyper, matern52
from hpo_operator.search.model_based import ModelSearcher
from hpo_operator.search.training_cost import TrainingCost

MAX_POINTS = 200
# Trials trained to maxResource at which the seconds' weight has fallen to a half: EI / seconds ** w,
# w = COOLING_TRIALS / (COOLING_TRIALS + trials at maxResource). Chosen on the tuning tables among
# 4, 8, 16, 32 and other schedules (docs/schedulers.md, "Cost-cooling").
COOLING_TRIALS = 8
TOP_PER_LEVEL = 20  # best observed configurations per level that local candidates may be drawn around


@dataclass(frozen=True)
class _Posterior:
    hyper: Hyper
    inputs: np.ndarray
    chol: tuple
    alpha: np.ndarray
    mean: float
    incumbent: float
    known: tuple[int, ...] = ()  # the trials the fit saw: observed ones, then the running ones it believes

    def predict_mean(self, z: np.ndarray) -> np.ndarray:
        """The posterior mean alone: ranking configurations needs no variance (and its solve)."""
        return self.mean + matern52(z, self.inputs, self.hyper.lengthscales, self.hyper.variance) @ self.alpha

    def predict(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = matern52(z, self.inputs, self.hyper.lengthscales, self.hyper.variance)
        mu = self.mean + k @ self.alpha
        v = solve_triangular(self.chol[0], k.T, lower=self.chol[1])
        var = np.maximum(self.hyper.variance - (v * v).sum(0), 1e-12)
        return mu, np.sqrt(var)


class LearningCurveGPSearcher(ModelSearcher):
    """MOBSTER-style searcher; see the module docstring.

    Kept between suggestions so that one costs a fit on at most ``MAX_POINTS`` points and
    predictions at a few hundred, however many observations are on record: each level's
    observations in rank order (``_ranked``, updated as results arrive), where the centres of the
    local candidates come from, and the posterior of the records with the data version it was
    fitted at (reused until an observation arrives; trials still running are added to it per
    suggestion)."""

    def __init__(self, *args, min_points: int = 6, **kwargs):
        super().__init__(*args, **kwargs)
        self.min_points = min_points
        self._hyper: Optional[Hyper] = None
        self._hyper_n = 0
        self._log_max = math.log(max(self.max_level, 2))
        self._fitted: Optional[tuple[int, tuple]] = None  # (data version, what _base_fit returned)
        self._ranked = {level: SortedList() for level in self.data.levels}  # (rank key, trial id) per level

    # ---- bookkeeping -------------------------------------------------------------
    def on_result(self, trial_index: int, resource: int, value: float, seconds: Optional[float] = None) -> None:
        ranked = self._ranked.get(resource)
        if ranked is not None and trial_index in self.data.by_level[resource]:
            ranked.remove((self.data.by_level[resource][trial_index], trial_index))  # a value reported again
        super().on_result(trial_index, resource, value, seconds)
        if ranked is not None:
            ranked.add((self.data.by_level[resource][trial_index], trial_index))

    def snapshot(self) -> "LearningCurveGPSearcher":
        other = super().snapshot()
        other._ranked = {level: ranked.copy() for level, ranked in self._ranked.items()}
        return other

    def best_observed(self, level: int, n: int) -> list[int]:
        """The ``n`` trials with the best values observed at ``level`` (ties: the older first)."""
        return [tid for _, tid in self._ranked[level][:n]]

    def local_centres(self, model: _Posterior) -> list[int]:
        """The trials local candidates may be drawn around: those the fit saw (the highest
        fidelities, the newest, the running) and the best observed at every level. Not every
        configuration on record: predicting at all of them was most of a suggestion at 10,000
        observations, and one that is none of these is neither near the data the model trusts
        most nor good where it was measured."""
        ids = set(model.known)
        for level in self.data.levels:
            ids.update(self.best_observed(level, TOP_PER_LEVEL))
        return sorted(ids)

    def adopt_cache(self, other: "LearningCurveGPSearcher") -> None:
        self.cost.adopt(other.cost)
        if other._hyper_n > self._hyper_n:
            self._hyper, self._hyper_n = other._hyper, other._hyper_n
        if (other._fitted is not None and other._fitted[0] == self.data.version
                and other._fitted[1][0].hyper is self._hyper):
            self._fitted = other._fitted  # fitted on the records this searcher still holds

    def _fidelity(self, levels) -> np.ndarray:
        return np.log(np.maximum(np.asarray(levels, dtype=float), 1)) / self._log_max

    def _config_features(self, ids: list[int]) -> np.ndarray:
        return self.candidates.columns.one_hot(np.array([self.x[t] for t in ids]))

    def _inputs(self, ids: list[int], levels: list[int]) -> np.ndarray:
        return np.hstack([self._config_features(ids), self._fidelity(levels)[:, None]])

    def _training_set(self) -> tuple[list[int], list[int], np.ndarray]:
        by_level = self.data.by_level
        if self.data.count() <= MAX_POINTS:
            points = [(level, tid, by_level[level][tid]) for level in self.data.levels for tid in by_level[level]]
        else:
            # The highest fidelities first, then the newest trials (what sorting every observation by
            # (-level, -id) and keeping the first MAX_POINTS gives), touching only the levels needed.
            points = []
            for level in reversed(self.data.levels):
                room = MAX_POINTS - len(points)
                if room <= 0:
                    break
                points += [(level, tid, by_level[level][tid]) for tid in heapq.nlargest(room, by_level[level])]
        keys = np.array([p[2] for p in points])
        finite = np.isfinite(keys)
        if finite.any():
            keys = np.where(finite, keys, keys[finite].max())
        scores = norm.ppf((rankdata(keys) - 0.5) / len(keys))  # normal scores: smaller is better
        return [p[1] for p in points], [p[0] for p in points], scores

    # ---- the model ---------------------------------------------------------------
    def fit(self, pending: list[int]) -> Optional[_Posterior]:
        base = self._base_fit()
        if base is None:
            return None
        posterior, z, y, incumbent_ids = base
        fresh = [t for t in pending if t not in self.data.by_level[self.max_level]]
        if fresh:  # kriging believer: each running trial enters at its predicted final value
            zp = self._inputs(fresh, [self.max_level] * len(fresh))
            believed = posterior.predict_mean(zp)
            posterior = self._posterior(np.vstack([z, zp]), np.concatenate([y, believed]), self._hyper,
                                        incumbent_ids=incumbent_ids, fresh=fresh)
        return posterior

    def _base_fit(self) -> Optional[tuple[_Posterior, np.ndarray, np.ndarray, list[int]]]:
        """The posterior of the observations on record (no pending trials), refitted only when an
        observation arrived since the last one (or the hyperparameters changed)."""
        if (self._fitted is not None and self._fitted[0] == self.data.version
                and self._fitted[1][0].hyper is self._hyper):
            return self._fitted[1]
        ids, levels, y = self._training_set()
        if len(ids) < self.min_points:
            return None
        z = self._inputs(ids, levels)
        if self._hyper is None or len(ids) >= 1.25 * self._hyper_n:
            self._hyper = fit_hyper(z, y - y.mean())
            self._hyper_n = len(ids)
        incumbent_ids = sorted(set(ids))
        base = (self._posterior(z, y, self._hyper, incumbent_ids), z, y, incumbent_ids)
        self._fitted = (self.data.version, base)
        return base

    def _posterior(self, z: np.ndarray, y: np.ndarray, hyper: Hyper, incumbent_ids: list[int],
                   fresh: Sequence[int] = ()) -> _Posterior:
        mean = float(y.mean())
        chol, alpha = factor(z, y - mean, hyper)
        post = _Posterior(hyper, z, chol, alpha, mean, 0.0)
        mu = post.predict_mean(self._inputs(incumbent_ids, [self.max_level] * len(incumbent_ids)))
        return _Posterior(hyper, z, chol, alpha, mean, float(mu.min()), tuple(incumbent_ids) + tuple(fresh))

    def score(self, model: _Posterior, x: np.ndarray) -> np.ndarray:
        """Expected improvement per second of training (the seconds weighed by :meth:`cost_weight`),
        as a log; expected improvement alone while too few epochs are timed."""
        features = self.candidates.columns.one_hot(x)
        mu, sd = model.predict(np.hstack([features, np.ones((len(x), 1))]))
        u = (model.incumbent - mu) / sd
        improvement = sd * (u * ndtr(u) + norm.pdf(u))  # expected improvement (smaller is better)
        cost = self.cost.model(self._config_features)
        if cost is None:
            return improvement
        return np.log(np.maximum(improvement, 1e-300)) - self.cost_weight() * cost.log_seconds(features)

    def cost_weight(self) -> float:
        """The exponent of the seconds in expected improvement per second: 1 while no trial has
        been trained to the end, a half once ``COOLING_TRIALS`` have, towards 0 after. A function of
        the records, so a restored searcher weighs as the live one did."""
        finished = len(self.data.by_level[self.max_level])
        return COOLING_TRIALS / (COOLING_TRIALS + finished)

    def propose(self, model: _Posterior, rng: np.random.Generator) -> np.ndarray:
        uniform = self.candidates.uniform(rng, self.n_candidates)
        # Local draws around the configurations predicted best, where improvements are likeliest.
        ids = self.local_centres(model)
        mu = model.predict_mean(self._inputs(ids, [self.max_level] * len(ids)))
        best = np.array([self.x[ids[i]] for i in np.argsort(mu, kind="stable")[:5]])
        local = best[rng.integers(len(best), size=self.n_candidates // 4)].copy()
        numeric = self.candidates.columns.numeric
        local[:, numeric] += rng.normal(0, 0.05, (len(local), int(numeric.sum())))
        return np.vstack([uniform, self.candidates.snap(local)])


__all__ = ["LearningCurveGPSearcher"]
