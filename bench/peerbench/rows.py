"""A table's rows as the only configurations a searcher may propose.

Peers that propose points of the continuous space (Optuna's TPE, Syne Tune's
KDE, which ignores ``restrict_configurations``) are held to the table by
snapping each proposal to the nearest row not yet tried, in the same unit
encoding for every method (log scale where the space is log-scaled, one-hot
categories). Random proposals are drawn uniformly over the unused rows, so a
sparse corner of the table is not favoured.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

WITH_REPLACEMENT = "with-replacement"
WITHOUT_REPEATS = "without-repeats"
DRAWS = (WITHOUT_REPEATS, WITH_REPLACEMENT)


def _unit(domain: dict, value: Any) -> list[float]:
    kind = domain["type"]
    if kind == "choice":
        # One-hot scaled so two different categories are 1 apart, like one unit of a numeric range.
        return [math.sqrt(0.5) * float(value == v) for v in domain["values"]]
    lo, hi = float(domain["min"]), float(domain["max"])
    if kind in ("loguniform", "lograndint", "logfinrange"):
        lo, hi, value = math.log(lo), math.log(hi), math.log(max(float(value), 1e-300))
    return [0.0 if hi == lo else (float(value) - lo) / (hi - lo)]


def key_of(config: dict, names: list[str]) -> tuple:
    return tuple(config[n] for n in names)


class RowPool:
    """The rows a searcher may still propose; every row once, or any row any time with ``repeats``."""

    def __init__(self, configs: list[dict], space: dict[str, dict], *, repeats: bool):
        missing = [n for n in space if any(n not in c for c in configs)]
        if missing:
            raise ValueError(f"search_space names {missing}, which the table's configs lack")
        self.configs = configs
        self.names = list(space)
        self.repeats = repeats
        self.features = np.array([[u for n in self.names for u in _unit(space[n], c[n])] for c in configs])
        self._index = {key_of(c, self.names): i for i, c in enumerate(configs)}
        if len(self._index) != len(configs):
            raise ValueError("the table has duplicate configurations; rows must be distinguishable by their values")
        self._space = space
        self._unused = np.ones(len(configs), dtype=bool)

    @property
    def remaining(self) -> int:
        return len(self.configs) if self.repeats else int(self._unused.sum())

    def row_of(self, config: dict) -> Optional[int]:
        """The row with exactly these values, if any."""
        try:
            return self._index.get(key_of(config, self.names))
        except KeyError:
            return None

    def _take(self, row: int) -> int:
        if not self.repeats:
            if not self._unused[row]:
                raise ValueError(f"row {row} was already proposed")
            self._unused[row] = False
        return row

    def take_random(self, rng: np.random.Generator) -> Optional[int]:
        """A row drawn uniformly among those still allowed (None when all are used)."""
        if self.repeats:
            return self._take(int(rng.integers(len(self.configs))))
        free = np.flatnonzero(self._unused)
        return None if len(free) == 0 else self._take(int(rng.choice(free)))

    def take_nearest(self, config: dict) -> Optional[int]:
        """The allowed row nearest to ``config`` in the unit encoding (None when all are used)."""
        point = np.array([u for n in self.names for u in _unit(self._space[n], config[n])])
        dist = ((self.features - point) ** 2).sum(axis=1)
        if not self.repeats:
            dist = np.where(self._unused, dist, np.inf)
        row = int(np.argmin(dist))
        return None if not np.isfinite(dist[row]) else self._take(row)
