"""Searchers: which configuration trial number ``i`` gets.

Random and grid configurations are a pure function of ``(seed, trial
index)`` or of the index alone, so a restarted operator hands out exactly the
configurations it would have without the restart, with no searcher state to
save. Model-based searchers (:mod:`hpo_operator.search.kde`,
:mod:`hpo_operator.search.gp`) rebuild their state from the recorded
configurations and observations (:meth:`Searcher.restore`).
"""

from __future__ import annotations

import math
import zlib
from typing import Any, Collection, Iterable, Mapping, Optional, Protocol, Sequence

import numpy as np

from hpo_operator.rank_agreement import MIN_AGREEMENT
from hpo_operator.search.domains import finite_values, sample
from hpo_operator.search.features import SpaceCandidates
from hpo_operator.search.gp import LearningCurveGPSearcher
from hpo_operator.search.kde import DensityRatioSearcher, recipe_for


class Searcher(Protocol):
    def suggest(self, trial_index: int, pending: Collection[int] = ()) -> dict[str, Any] | None:
        """Configuration of trial ``trial_index`` (0-based), or None when the space is exhausted.

        ``pending``: ids of trials still running, which a model takes into account."""

    def exhausted(self, trial_index: int) -> bool:
        """No configuration is left for trial ``trial_index`` (cheap: no model is fitted)."""

    def on_result(self, trial_index: int, resource: int, value: float, seconds: Optional[float] = None) -> None:
        """Learn from a result (model-based searchers); random and grid ignore it. ``seconds``: how long
        the epoch took, where the backend could time it (the gp weighs candidates by training time)."""

    def restore(self, trials: Iterable[tuple[int, Mapping[str, Any], Sequence[tuple]]]) -> None:
        """Rebuild from records: (trial id, configuration, observations as (epoch, value) or
        (epoch, value, seconds)); random and grid keep none."""


class _Stateless:
    """What searchers that learn nothing share."""

    def exhausted(self, trial_index: int) -> bool:
        return False

    def on_result(self, trial_index: int, resource: int, value: float, seconds: Optional[float] = None) -> None:
        return None

    def restore(self, trials) -> None:
        return None


class RandomSearcher(_Stateless):
    def __init__(self, space: Mapping[str, Any], seed: int = 0):
        self.space = dict(space)
        self.seed = seed

    def suggest(self, trial_index: int, pending: Collection[int] = ()) -> dict[str, Any]:
        # One independent stream per trial and parameter: trial i's value of "lr"
        # depends neither on earlier trials nor on the order of the parameters in
        # the manifest (the API server re-sorts keys) nor on the other parameters.
        return {name: sample(domain, np.random.default_rng([self.seed, trial_index, zlib.crc32(name.encode())]))
                for name, domain in self.space.items()}


class GridSearcher(_Stateless):
    """Every combination of the domains' values, in a seeded shuffled order.

    The shuffle makes a budget smaller than the grid cover the space evenly
    instead of exhausting the first parameter's first value.
    """

    def __init__(self, space: Mapping[str, Any], grid_points: int = 5, seed: int = 0, shuffle: bool = True):
        self.names = sorted(space)  # the manifest's key order must not matter
        self.axes = [finite_values(space[n], grid_points) for n in self.names]
        self.size = math.prod(len(a) for a in self.axes)
        self._order = np.random.default_rng(seed).permutation(self.size) if shuffle else None

    def exhausted(self, trial_index: int) -> bool:
        return trial_index >= self.size

    def suggest(self, trial_index: int, pending: Collection[int] = ()) -> dict[str, Any] | None:
        if trial_index >= self.size:
            return None
        flat = int(self._order[trial_index]) if self._order is not None else trial_index
        config = {}
        for name, axis in zip(reversed(self.names), reversed(self.axes)):
            flat, k = divmod(flat, len(axis))
            config[name] = axis[k]
        return {n: config[n] for n in self.names}


class TableRowSearcher(_Stateless):
    """Random rows of a learning-curve table (simulation): with replacement, or each row at most once.

    Without repeats, trial ``i`` gets row ``i`` of a seeded permutation: the same order a
    model-based searcher's random share draws from (:meth:`ModelSearcher.random_pick`)."""

    def __init__(self, n_rows: int, seed: int = 0, repeats: bool = True):
        self.n_rows = n_rows
        self.seed = seed
        self.repeats = repeats
        self._order = None if repeats else np.random.default_rng([seed, 0x7AB]).permutation(n_rows)

    def exhausted(self, trial_index: int) -> bool:
        return not self.repeats and trial_index >= self.n_rows

    def suggest(self, trial_index: int, pending: Collection[int] = ()) -> dict[str, Any] | None:
        if self._order is not None:
            return None if trial_index >= self.n_rows else {"row": int(self._order[trial_index])}
        rng = np.random.default_rng([self.seed, trial_index])
        return {"row": int(rng.integers(self.n_rows))}


MODEL_SEARCHERS = ("kde", "gp")


def make_searcher(spec, space: Mapping[str, Any], *, levels: Sequence[int] = (1,), mode: str = "min",
                  candidates: Optional[Any] = None, scheduler: Optional[Any] = None) -> Searcher:
    """Searcher from a ``SearcherSpec``.

    ``levels``: the fidelities a model-based searcher fits on (the scheduler's rungs and
    maxResource); ``candidates``: what it chooses among (default: draws from ``space``);
    ``scheduler``: the ``SchedulerSpec``, which picks the kde's recipe and sets the agreement it asks of a
    lower level (``minAgreement``; None: the default scheduler's)."""
    if spec.algorithm == "random":
        return RandomSearcher(space, seed=spec.seed)
    if spec.algorithm == "grid":
        return GridSearcher(space, grid_points=spec.grid_points, seed=spec.seed)
    if spec.algorithm in MODEL_SEARCHERS:
        candidates = candidates or SpaceCandidates(space)
        if spec.algorithm == "kde":
            recipe = recipe_for("adaptive") if scheduler is None else recipe_for(scheduler.algorithm, scheduler.type)
            min_agreement = MIN_AGREEMENT if scheduler is None else scheduler.min_agreement
            return DensityRatioSearcher(candidates, levels, mode=mode, seed=spec.seed,
                                        random_fraction=spec.random_fraction, recipe=recipe,
                                        min_agreement=min_agreement)
        return LearningCurveGPSearcher(candidates, levels, mode=mode, seed=spec.seed,
                                       random_fraction=spec.random_fraction)
    raise ValueError(f"searcher.algorithm: unknown {spec.algorithm!r}")


def grid_size(space: Mapping[str, Any], grid_points: int) -> int:
    return math.prod(len(finite_values(d, grid_points)) for d in space.values())


__all__ = ["GridSearcher", "MODEL_SEARCHERS", "RandomSearcher", "Searcher", "TableRowSearcher", "grid_size",
           "make_searcher"]
