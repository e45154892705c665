"""Sampling and unit-cube encoding for each search-space domain.

Every domain maps to ``[0, 1]`` (``to_unit``/``from_unit``) so model-based
searchers can work in one space, and lists its finite values for grid search.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hpo_operator.spec.search_space import (
    Choice,
    FinRange,
    LogFinRange,
    LogRandInt,
    LogUniform,
    RandInt,
    Uniform,
)


def _lin(lo: float, hi: float, u: float) -> float:
    return lo + (hi - lo) * u


def _log(lo: float, hi: float, u: float) -> float:
    return math.exp(_lin(math.log(lo), math.log(hi), u))


def from_unit(domain, u: float) -> Any:
    """The domain value at position ``u`` in [0, 1]."""
    u = min(max(float(u), 0.0), 1.0)
    if isinstance(domain, FinRange):  # LogFinRange too
        k = min(int(u * domain.size), domain.size - 1)
        return finite_values(domain)[k]
    if isinstance(domain, Uniform):
        return _lin(domain.min, domain.max, u)
    if isinstance(domain, LogUniform):
        return _log(domain.min, domain.max, u)
    if isinstance(domain, LogRandInt):
        # Sample the continuous log range [min, max + 1) and floor: each integer
        # gets the mass of its log-width, so small values are not starved.
        # Clamped at both ends: exp(log(min)) can round to just below min.
        return min(max(int(math.floor(_log(domain.min, domain.max + 1, u))), domain.min), domain.max)
    if isinstance(domain, RandInt):
        return min(domain.min + int(u * (domain.max - domain.min + 1)), domain.max)
    if isinstance(domain, Choice):
        return domain.values[min(int(u * len(domain.values)), len(domain.values) - 1)]
    raise TypeError(f"unknown domain {domain!r}")


def to_unit(domain, value: Any) -> float:
    """Inverse of :func:`from_unit` (the centre of the value's cell for discrete domains)."""
    if isinstance(domain, (FinRange, LogFinRange)):
        values = finite_values(domain)
        k = min(range(len(values)), key=lambda i: abs(values[i] - value))
        return (k + 0.5) / len(values)
    if isinstance(domain, Uniform):
        return (value - domain.min) / (domain.max - domain.min)
    if isinstance(domain, LogUniform):
        return (math.log(value) - math.log(domain.min)) / (math.log(domain.max) - math.log(domain.min))
    if isinstance(domain, LogRandInt):
        lo, hi = math.log(domain.min), math.log(domain.max + 1)
        return (math.log(value + 0.5) - lo) / (hi - lo)
    if isinstance(domain, RandInt):
        return (value - domain.min + 0.5) / (domain.max - domain.min + 1)
    if isinstance(domain, Choice):
        return (domain.values.index(value) + 0.5) / len(domain.values)
    raise TypeError(f"unknown domain {domain!r}")


def snap_units(domain, u: np.ndarray) -> np.ndarray:
    """``to_unit(domain, from_unit(domain, u))`` for many positions at once: where the valid value
    nearest each ``u`` sits in [0, 1]. Model-based searchers snap hundreds of candidates per
    suggestion, and one Python call per value was most of a suggestion's time."""
    u = np.clip(np.asarray(u, dtype=float), 0.0, 1.0)
    if isinstance(domain, (FinRange, Choice)):  # LogFinRange too; a lookup through the scalar pair
        values = finite_values(domain)
        cells = np.minimum((u * len(values)).astype(int), len(values) - 1)
        return np.array([to_unit(domain, v) for v in values])[cells]
    if isinstance(domain, Uniform):
        return (_lin_array(domain.min, domain.max, u) - domain.min) / (domain.max - domain.min)
    if isinstance(domain, LogUniform):
        lo, hi = math.log(domain.min), math.log(domain.max)
        return (np.log(np.exp(_lin_array(lo, hi, u))) - lo) / (hi - lo)
    if isinstance(domain, LogRandInt):
        lo, hi = math.log(domain.min), math.log(domain.max + 1)
        value = np.clip(np.floor(np.exp(_lin_array(lo, hi, u))), domain.min, domain.max)
        return (np.log(value + 0.5) - lo) / (hi - lo)
    if isinstance(domain, RandInt):
        n = domain.max - domain.min + 1
        value = np.minimum(domain.min + (u * n).astype(np.int64), domain.max)
        return (value - domain.min + 0.5) / n
    raise TypeError(f"unknown domain {domain!r}")


def _lin_array(lo: float, hi: float, u: np.ndarray) -> np.ndarray:
    return lo + (hi - lo) * u


def finite_values(domain, grid_points: int = 5) -> list:
    """All values of a discrete domain; ``grid_points`` evenly spaced ones for a continuous one."""
    if isinstance(domain, LogFinRange):
        vals = [float(v) for v in np.geomspace(domain.min, domain.max, domain.size)]
        return [int(round(v)) for v in vals] if domain.cast_int else vals
    if isinstance(domain, FinRange):
        vals = [float(v) for v in np.linspace(domain.min, domain.max, domain.size)]
        return [int(round(v)) for v in vals] if domain.cast_int else vals
    if isinstance(domain, Choice):
        return list(domain.values)
    if isinstance(domain, (RandInt, LogRandInt)) and domain.max - domain.min + 1 <= grid_points:
        return list(range(domain.min, domain.max + 1))
    if isinstance(domain, (LogUniform, LogRandInt)):
        vals = [float(v) for v in np.geomspace(domain.min, domain.max, grid_points)]
    else:
        vals = [float(v) for v in np.linspace(domain.min, domain.max, grid_points)]
    if isinstance(domain, (RandInt, LogRandInt)):
        return sorted({int(round(v)) for v in vals})
    return vals


def sample(domain, rng: np.random.Generator) -> Any:
    return from_unit(domain, rng.random())
