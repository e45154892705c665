"""Searchers: which configuration trial number ``i`` gets.

Configurations are a pure function of ``(seed, trial index)`` (random) or of
the index alone (grid), so a restarted operator hands out exactly the
configurations it would have without the restart, with no searcher state to
save.
"""

from __future__ import annotations

import math
import zlib
from typing import Any, Mapping, Protocol

import numpy as np

from hpo_operator.search.domains import finite_values, sample


class Searcher(Protocol):
    def suggest(self, trial_index: int) -> dict[str, Any] | None:
        """Configuration of trial ``trial_index`` (0-based), or None when the space is exhausted."""

    def on_result(self, trial_index: int, resource: int, value: float) -> None:
        """Learn from a result (model-based searchers); random and grid ignore it."""


class RandomSearcher:
    def __init__(self, space: Mapping[str, Any], seed: int = 0):
        self.space = dict(space)
        self.seed = seed

    def suggest(self, trial_index: int) -> dict[str, Any]:
        # One independent stream per trial and parameter: trial i's value of "lr"
        # depends neither on earlier trials nor on the order of the parameters in
        # the manifest (the API server re-sorts keys) nor on the other parameters.
        return {name: sample(domain, np.random.default_rng([self.seed, trial_index, zlib.crc32(name.encode())]))
                for name, domain in self.space.items()}

    def on_result(self, trial_index: int, resource: int, value: float) -> None:
        return None


class GridSearcher:
    """Every combination of the domains' values, in a seeded shuffled order.

    The shuffle makes a budget smaller than the grid cover the space evenly
    instead of exhausting the first parameter's first value.
    """

    def __init__(self, space: Mapping[str, Any], grid_points: int = 5, seed: int = 0, shuffle: bool = True):
        self.names = sorted(space)  # the manifest's key order must not matter
        self.axes = [finite_values(space[n], grid_points) for n in self.names]
        self.size = math.prod(len(a) for a in self.axes)
        self._order = np.random.default_rng(seed).permutation(self.size) if shuffle else None

    def suggest(self, trial_index: int) -> dict[str, Any] | None:
        if trial_index >= self.size:
            return None
        flat = int(self._order[trial_index]) if self._order is not None else trial_index
        config = {}
        for name, axis in zip(reversed(self.names), reversed(self.axes)):
            flat, k = divmod(flat, len(axis))
            config[name] = axis[k]
        return {n: config[n] for n in self.names}

    def on_result(self, trial_index: int, resource: int, value: float) -> None:
        return None


class TableRowSearcher:
    """Draws row numbers of a learning-curve table with replacement (simulation)."""

    def __init__(self, n_rows: int, seed: int = 0):
        self.n_rows = n_rows
        self.seed = seed

    def suggest(self, trial_index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, trial_index])
        return {"row": int(rng.integers(self.n_rows))}

    def on_result(self, trial_index: int, resource: int, value: float) -> None:
        return None


def make_searcher(spec, space: Mapping[str, Any]) -> Searcher:
    """Searcher from a ``SearcherSpec``."""
    if spec.algorithm == "random":
        return RandomSearcher(space, seed=spec.seed)
    if spec.algorithm == "grid":
        return GridSearcher(space, grid_points=spec.grid_points, seed=spec.seed)
    raise ValueError(f"searcher.algorithm: unknown {spec.algorithm!r}")


def grid_size(space: Mapping[str, Any], grid_points: int) -> int:
    return math.prod(len(finite_values(d, grid_points)) for d in space.values())


__all__ = ["GridSearcher", "RandomSearcher", "Searcher", "TableRowSearcher", "grid_size", "make_searcher"]
