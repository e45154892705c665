"""Configurations as feature vectors for models, and the candidates a model scores.

A model sees a configuration as numbers: one column per parameter, numeric
ones in ``[0, 1]`` on the domain's own scale (log for log domains),
categorical ones as the category's index. :class:`SpaceCandidates` draws
candidates from a manifest's search space (every draw goes through the
domain, so it is always a valid value: in range, integer where the domain is,
one of the categories); :class:`TableCandidates` offers the rows of a
learning-curve table, each at most once (simulation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from hpo_operator.search.domains import from_unit, snap_units, to_unit
from hpo_operator.spec.search_space import Choice


@dataclass(frozen=True)
class Columns:
    """What each feature column is: ``levels[j]`` categories, or 0 for a numeric column in [0, 1]."""

    names: tuple[str, ...]
    levels: tuple[int, ...]

    @property
    def numeric(self) -> np.ndarray:
        return np.array([k == 0 for k in self.levels], dtype=bool)

    def one_hot(self, x: np.ndarray) -> np.ndarray:
        """Numeric columns as they are, categorical ones expanded to indicator columns (for a GP)."""
        parts = []
        for j, k in enumerate(self.levels):
            if k == 0:
                parts.append(x[:, j:j + 1])
            else:
                parts.append((x[:, j:j + 1].astype(int) == np.arange(k)[None, :]).astype(float))
        return np.hstack(parts) if parts else np.zeros((len(x), 0))


class SpaceCandidates:
    """Candidates drawn from a manifest's search space."""

    finite = False

    def __init__(self, space: Mapping[str, Any]):
        self.space = dict(space)
        self.names = sorted(self.space)  # the manifest's key order must not matter
        self.columns = Columns(tuple(self.names),
                               tuple(len(self.space[n].values) if isinstance(self.space[n], Choice) else 0
                                     for n in self.names))

    def encode(self, config: Mapping[str, Any]) -> np.ndarray:
        out = np.empty(len(self.names))
        for j, name in enumerate(self.names):
            domain = self.space[name]
            if isinstance(domain, Choice):
                out[j] = domain.values.index(config[name])
            else:
                out[j] = min(max(to_unit(domain, config[name]), 0.0), 1.0)
        return out

    def decode(self, x: np.ndarray) -> dict[str, Any]:
        """The valid configuration at feature vector ``x`` (out-of-range numbers are clipped)."""
        config = {}
        for j, name in enumerate(self.names):
            domain = self.space[name]
            if isinstance(domain, Choice):
                config[name] = domain.values[int(min(max(round(x[j]), 0), len(domain.values) - 1))]
            else:
                config[name] = from_unit(domain, float(x[j]))
        return config

    def uniform(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` draws from the prior, as feature vectors of valid configurations."""
        x = rng.random((n, len(self.names)))
        for j, k in enumerate(self.columns.levels):
            if k:
                x[:, j] = np.minimum((x[:, j] * k).astype(int), k - 1)
        return self.snap(x)

    def snap(self, x: np.ndarray) -> np.ndarray:
        """Feature vectors moved onto valid configurations (integers, categories, bounds): what
        ``encode(decode(row))`` gives for each row, computed a column at a time."""
        out = np.empty(x.shape)
        for j, name in enumerate(self.names):
            domain = self.space[name]
            if isinstance(domain, Choice):
                k = len(domain.values)
                first = np.array([domain.values.index(v) for v in domain.values], dtype=float)
                out[:, j] = first[np.clip(np.round(x[:, j]), 0, k - 1).astype(int)]
            else:
                out[:, j] = np.clip(snap_units(domain, x[:, j]), 0.0, 1.0)
        return out

    def pool(self, used: Sequence[Mapping[str, Any]]) -> Optional[np.ndarray]:
        return None  # continuous: candidates are drawn, not listed


class TableCandidates:
    """The rows of a learning-curve table; a configuration is ``{"row": i}``."""

    finite = True

    def __init__(self, configs: Sequence[Mapping[str, Any]], space: Optional[Mapping[str, Any]] = None):
        if space is not None:
            enc = SpaceCandidates(space)
            self.columns = enc.columns
            self.x = np.array([enc.encode(c) for c in configs])
        else:
            self.columns, self.x = _infer_columns(configs)
        self.n_rows = len(configs)

    def encode(self, config: Mapping[str, Any]) -> np.ndarray:
        return self.x[int(config["row"])]

    def decode_row(self, row: int) -> dict[str, Any]:
        return {"row": int(row)}

    def unused_rows(self, used: Sequence[Mapping[str, Any]]) -> np.ndarray:
        taken = np.zeros(self.n_rows, dtype=bool)
        for c in used:
            taken[int(c["row"])] = True
        return np.flatnonzero(~taken)


def _infer_columns(configs: Sequence[Mapping[str, Any]]) -> tuple[Columns, np.ndarray]:
    """Feature columns for table rows with no declared space.

    A numeric parameter is scaled to [0, 1] over the table's range, on a log
    scale when it is positive and spans two orders of magnitude or more
    (learning rates, widths, weight decay); anything else is categorical.
    """
    names = sorted({k for c in configs for k in c})
    levels, cols = [], []
    for name in names:
        vals = [c.get(name) for c in configs]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            v = np.array(vals, dtype=float)
            lo, hi = float(v.min()), float(v.max())
            if lo > 0 and hi / lo >= 100:
                v, lo, hi = np.log(v), math.log(lo), math.log(hi)
            cols.append((v - lo) / (hi - lo) if hi > lo else np.zeros_like(v))
            levels.append(0)
        else:
            cats = sorted({repr(v) for v in vals})
            index = {c: i for i, c in enumerate(cats)}
            cols.append(np.array([index[repr(v)] for v in vals], dtype=float))
            levels.append(len(cats))
    return Columns(tuple(names), tuple(levels)), np.column_stack(cols) if cols else np.zeros((len(configs), 0))


__all__ = ["Columns", "SpaceCandidates", "TableCandidates"]
