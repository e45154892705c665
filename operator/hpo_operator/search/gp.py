"""A Gaussian process over (configuration, fidelity), as in MOBSTER (Klein et al., 2020).

Every observation at every fidelity level is one data point ``(x, t)`` with
``t = log(resource) / log(max_resource)``; one GP with a Matern-5/2 kernel
(a lengthscale per column, ``t`` included) learns how values change with the
configuration and with training time together, so a trial seen only at its
first rung still tells the model about the final value of its neighbours.
The next trial is the candidate with the largest expected improvement at
``t = 1`` over the best predicted final value of any observed configuration.
Trials still running enter as their predicted final value ("kriging
believer"): their neighbourhood loses its uncertainty, so simultaneous
suggestions spread out.

Values enter as normal scores of their ranks, which keeps diverged runs
(error 1.0, NaN) from dominating the fit. Hyperparameters are refitted by
maximum likelihood when the data has grown by a quarter since the last fit,
on at most ``MAX_POINTS`` points (the highest fidelities first, then the
newest trials).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy.linalg import cho_factor, cho_solve, solve_triangular
from scipy.optimize import minimize
from scipy.special import ndtr
from scipy.stats import norm, rankdata

from hpo_operator.search.model_based import ModelSearcher

MAX_POINTS = 200
JITTER = 1e-6


def _matern52(a: np.ndarray, b: np.ndarray, lengthscales: np.ndarray, variance: float) -> np.ndarray:
    d = np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) / lengthscales) ** 2, 0).sum(-1)) * math.sqrt(5)
    return variance * (1 + d + d * d / 3) * np.exp(-d)


@dataclass(frozen=True)
class _Hyper:
    lengthscales: np.ndarray
    variance: float
    noise: float

    def vector(self) -> np.ndarray:
        return np.concatenate([np.log(self.lengthscales), [math.log(self.variance), math.log(self.noise)]])

    @staticmethod
    def from_vector(v: np.ndarray) -> "_Hyper":
        return _Hyper(np.exp(v[:-2]), float(math.exp(v[-2])), float(math.exp(v[-1])))


@dataclass(frozen=True)
class _Posterior:
    hyper: _Hyper
    inputs: np.ndarray
    chol: tuple
    alpha: np.ndarray
    mean: float
    incumbent: float

    def predict(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = _matern52(z, self.inputs, self.hyper.lengthscales, self.hyper.variance)
        mu = self.mean + k @ self.alpha
        v = solve_triangular(self.chol[0], k.T, lower=self.chol[1])
        var = np.maximum(self.hyper.variance - (v * v).sum(0), 1e-12)
        return mu, np.sqrt(var)


def _neg_log_likelihood(v: np.ndarray, z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Negative log marginal likelihood (plus weak log-normal priors that keep lengthscales and noise
    sensible with few points) and its gradient in the log hyperparameters."""
    h = _Hyper.from_vector(v)
    n = len(z)
    scaled = (z[:, None, :] - z[None, :, :]) / h.lengthscales  # (n, n, d)
    sq = scaled ** 2
    r5 = np.sqrt(sq.sum(-1)) * math.sqrt(5)
    e = np.exp(-r5)
    kf = h.variance * (1 + r5 + r5 * r5 / 3) * e
    k = kf + (h.noise + JITTER) * np.eye(n)
    try:
        c = cho_factor(k, lower=True)
    except np.linalg.LinAlgError:
        return 1e10, np.zeros_like(v)
    alpha = cho_solve(c, y)
    w = cho_solve(c, np.eye(n)) - np.outer(alpha, alpha)  # dNLL/dK = w / 2
    common = h.variance * (5.0 / 3.0) * (1 + r5) * e  # dK/dlog(l_j) = common * sq[..., j]
    grad = np.empty_like(v)
    grad[:-2] = 0.5 * np.einsum("ij,ijk->k", w * common, sq)
    grad[-2] = 0.5 * (w * kf).sum()
    grad[-1] = 0.5 * np.trace(w) * h.noise
    prior = 0.5 * ((v[:-2] - math.log(0.5)) ** 2).sum() / 4 + 0.5 * (v[-1] - math.log(0.05)) ** 2 / 4
    grad[:-2] += (v[:-2] - math.log(0.5)) / 4
    grad[-1] += (v[-1] - math.log(0.05)) / 4
    return float(0.5 * y @ alpha + np.log(np.diag(c[0])).sum() + prior), grad


class LearningCurveGPSearcher(ModelSearcher):
    """MOBSTER-style searcher; see the module docstring."""

    def __init__(self, *args, min_points: int = 6, **kwargs):
        super().__init__(*args, **kwargs)
        self.min_points = min_points
        self._hyper: Optional[_Hyper] = None
        self._hyper_n = 0
        self._log_max = math.log(max(self.max_level, 2))

    def adopt_cache(self, other: "LearningCurveGPSearcher") -> None:
        if other._hyper_n > self._hyper_n:
            self._hyper, self._hyper_n = other._hyper, other._hyper_n

    def _inputs(self, ids: list[int], levels: list[int]) -> np.ndarray:
        x = self.candidates.columns.one_hot(np.array([self.x[t] for t in ids]))
        t = np.log(np.maximum(np.array(levels, dtype=float), 1)) / self._log_max
        return np.hstack([x, t[:, None]])

    def _training_set(self) -> tuple[list[int], list[int], np.ndarray]:
        points = [(level, tid, key) for level in self.data.levels for tid, key in self.data.by_level[level].items()]
        if len(points) > MAX_POINTS:
            points = sorted(points, key=lambda p: (-p[0], -p[1]))[:MAX_POINTS]
        keys = np.array([p[2] for p in points])
        finite = np.isfinite(keys)
        if finite.any():
            keys = np.where(finite, keys, keys[finite].max())
        scores = norm.ppf((rankdata(keys) - 0.5) / len(keys))  # normal scores: smaller is better
        return [p[1] for p in points], [p[0] for p in points], scores

    def fit(self, pending: list[int]) -> Optional[_Posterior]:
        ids, levels, y = self._training_set()
        if len(ids) < self.min_points:
            return None
        z = self._inputs(ids, levels)
        if self._hyper is None or len(ids) >= 1.25 * self._hyper_n:
            self._hyper = self._fit_hyper(z, y)
            self._hyper_n = len(ids)
        posterior = self._posterior(z, y, self._hyper, incumbent_ids=sorted(set(ids)))
        fresh = [t for t in pending if t not in self.data.by_level[self.max_level]]
        if fresh:
            zp = self._inputs(fresh, [self.max_level] * len(fresh))
            believed, _ = posterior.predict(zp)
            posterior = self._posterior(np.vstack([z, zp]), np.concatenate([y, believed]), self._hyper,
                                        incumbent_ids=sorted(set(ids)))
        return posterior

    def _fit_hyper(self, z: np.ndarray, y: np.ndarray) -> _Hyper:
        start = _Hyper(np.full(z.shape[1], 0.5), 1.0, 0.05).vector()
        bounds = [(math.log(0.02), math.log(20.0))] * z.shape[1] + [(math.log(0.05), math.log(20.0)),
                                                                     (math.log(1e-4), math.log(1.0))]
        y0 = y - y.mean()
        result = minimize(_neg_log_likelihood, start, args=(z, y0), method="L-BFGS-B", jac=True,
                          bounds=bounds, options={"maxiter": 30})
        return _Hyper.from_vector(result.x)

    def _posterior(self, z: np.ndarray, y: np.ndarray, hyper: _Hyper, incumbent_ids: list[int]) -> _Posterior:
        mean = float(y.mean())
        k = _matern52(z, z, hyper.lengthscales, hyper.variance) + (hyper.noise + JITTER) * np.eye(len(z))
        chol = cho_factor(k, lower=True)
        alpha = cho_solve(chol, y - mean)
        post = _Posterior(hyper, z, chol, alpha, mean, 0.0)
        mu, _ = post.predict(self._inputs(incumbent_ids, [self.max_level] * len(incumbent_ids)))
        return _Posterior(hyper, z, chol, alpha, mean, float(mu.min()))

    def score(self, model: _Posterior, x: np.ndarray) -> np.ndarray:
        z = np.hstack([self.candidates.columns.one_hot(x), np.ones((len(x), 1))])
        mu, sd = model.predict(z)
        u = (model.incumbent - mu) / sd
        return sd * (u * ndtr(u) + norm.pdf(u))  # expected improvement (smaller is better)

    def propose(self, model: _Posterior, rng: np.random.Generator) -> np.ndarray:
        uniform = self.candidates.uniform(rng, self.n_candidates)
        # Local draws around the configurations predicted best, where improvements are likeliest.
        observed = sorted(self.x)
        mu, _ = model.predict(self._inputs(observed, [self.max_level] * len(observed)))
        best = np.array([self.x[observed[i]] for i in np.argsort(mu)[:5]])
        local = best[rng.integers(len(best), size=self.n_candidates // 4)].copy()
        numeric = self.candidates.columns.numeric
        local[:, numeric] += rng.normal(0, 0.05, (len(local), int(numeric.sum())))
        return np.vstack([uniform, self.candidates.snap(local)])


__all__ = ["LearningCurveGPSearcher"]
