"""The Gaussian-process regression both GP models use: a Matern-5/2 kernel with a lengthscale per
input column, its hyperparameters fitted by maximum likelihood, and the posterior mean.

:mod:`hpo_operator.search.gp` models the objective over (configuration, fidelity) with it, and
:mod:`hpo_operator.search.training_cost` the seconds an epoch takes over the configuration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.optimize import minimize

JITTER = 1e-6


def matern52(a: np.ndarray, b: np.ndarray, lengthscales: np.ndarray, variance: float) -> np.ndarray:
    # Squared distances as |a|^2 + |b|^2 - 2 a.b (one matrix product): the (n, m, d) array of
    # differences cost most of a suggestion's time.
    a, b = a / lengthscales, b / lengthscales
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * (a @ b.T)
    d = np.sqrt(np.maximum(sq, 0) * 5)
    return variance * (1 + d + d * d / 3) * np.exp(-d)


@dataclass(frozen=True)
class Hyper:
    lengthscales: np.ndarray
    variance: float
    noise: float

    def vector(self) -> np.ndarray:
        return np.concatenate([np.log(self.lengthscales), [math.log(self.variance), math.log(self.noise)]])

    @staticmethod
    def from_vector(v: np.ndarray) -> "Hyper":
        return Hyper(np.exp(v[:-2]), float(math.exp(v[-2])), float(math.exp(v[-1])))


def neg_log_likelihood(v: np.ndarray, z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Negative log marginal likelihood (plus weak log-normal priors that keep lengthscales and noise
    sensible with few points) and its gradient in the log hyperparameters."""
    h = Hyper.from_vector(v)
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


def fit_hyper(z: np.ndarray, y: np.ndarray) -> Hyper:
    """Maximum-likelihood hyperparameters for inputs ``z`` (columns in [0, 1]) and centred targets ``y``
    of unit scale (normal scores, or standardised values)."""
    start = Hyper(np.full(z.shape[1], 0.5), 1.0, 0.05).vector()
    bounds = [(math.log(0.02), math.log(20.0))] * z.shape[1] + [(math.log(0.05), math.log(20.0)),
                                                                 (math.log(1e-4), math.log(1.0))]
    result = minimize(neg_log_likelihood, start, args=(z, y), method="L-BFGS-B", jac=True,
                      bounds=bounds, options={"maxiter": 30})
    return Hyper.from_vector(result.x)


def factor(z: np.ndarray, y: np.ndarray, hyper: Hyper) -> tuple[tuple, np.ndarray]:
    """The Cholesky factor of the noisy kernel matrix at ``z`` (for posterior variances) and the
    weights ``a`` of the posterior mean at ``q``: ``matern52(q, z, ...) @ a`` (``y`` centred)."""
    k = matern52(z, z, hyper.lengthscales, hyper.variance) + (hyper.noise + JITTER) * np.eye(len(z))
    chol = cho_factor(k, lower=True)
    return chol, cho_solve(chol, y)


__all__ = ["Hyper", "JITTER", "factor", "fit_hyper", "matern52", "neg_log_likelihood"]
