"""What every model-based searcher shares: the observations it learns from, and how it picks.

The searcher's whole state is the trials' configurations and their values at
the fidelity levels (the scheduler's rungs and ``max_resource``), so
:meth:`ModelSearcher.restore` rebuilds it from the records a backend keeps.
A model is fitted when a suggestion is asked for, from what is on record then;
trials still running (``pending``) are known to the model so that it does not
propose the same region twice at once.

A seeded share of trials (``random_fraction``) take a random draw instead of
the model's pick: it keeps exploring where the model is wrong, and before the
model has enough observations every trial is a random draw.
"""

from __future__ import annotations

import copy
import itertools
from abc import ABC, abstractmethod
from typing import Any, Collection, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
from threadpoolctl import ThreadpoolController

from hpo_operator.search.features import SpaceCandidates, TableCandidates
from hpo_operator.search.training_cost import TrainingCost

Candidates = Union[SpaceCandidates, TableCandidates]


def rank_key(value: float, mode: str) -> float:
    """Smaller is better; NaN and infinities rank worst (as the schedulers rank them)."""
    if value is None or not np.isfinite(value):
        return float("inf")
    return float(value) if mode == "min" else -float(value)


_changes = itertools.count(1)


class Data:
    """The observations a model is fitted on, by fidelity level; values as rank keys (smaller is better).

    ``version`` changes with every observation taken, so a model fitted on these records can be
    kept until it does. It is drawn from one counter for all records, so a copy that took other
    observations (a snapshot) never shows the version of the records it was copied from."""

    def __init__(self, levels: Sequence[int]):
        self.levels = sorted(set(int(r) for r in levels))
        self.by_level: dict[int, dict[int, float]] = {r: {} for r in self.levels}
        self.version = 0

    def add(self, trial_id: int, resource: int, key: float) -> None:
        if resource in self.by_level:
            self.by_level[resource][trial_id] = key
            self.version = next(_changes)

    def count(self) -> int:
        return sum(len(v) for v in self.by_level.values())


_controller: Optional[ThreadpoolController] = None


def _blas() -> ThreadpoolController:
    """The thread pools of the loaded BLAS libraries, looked up once: a lookup per suggestion
    (``threadpool_limits``) cost a few milliseconds each time."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller


class ModelSearcher(ABC):
    """Base: bookkeeping, the random share, and choosing among candidates."""

    def __init__(self, candidates: Candidates, levels: Sequence[int], mode: str = "min", seed: int = 0,
                 random_fraction: float = 0.2, n_candidates: int = 256):
        self.candidates = candidates
        self.mode = mode
        self.seed = seed
        self.random_fraction = random_fraction
        self.n_candidates = n_candidates
        self.configs: dict[int, dict[str, Any]] = {}
        self.x: dict[int, np.ndarray] = {}
        self.data = Data(levels)
        self.cost = TrainingCost()
        self.max_level = self.data.levels[-1]

    # ---- the searcher interface ----------------------------------------------
    def exhausted(self, trial_index: int) -> bool:
        if self.candidates.finite:
            return len(self.configs) >= self.candidates.n_rows
        return False

    def suggest(self, trial_index: int, pending: Collection[int] = ()) -> Optional[dict[str, Any]]:
        """Configuration of trial ``trial_index``; ``pending``: ids of trials still running."""
        if trial_index in self.configs:
            return self.configs[trial_index]  # a created trial's configuration never changes
        if self.exhausted(trial_index):
            return None
        rng = np.random.default_rng([self.seed, trial_index, 0x5EA])
        config = None
        if rng.random() >= self.random_fraction:
            config = self.model_pick(rng, [t for t in pending if t in self.x])
        if config is None:
            config = self.random_pick(trial_index, rng)
        self.remember(trial_index, config)
        return config

    def on_result(self, trial_index: int, resource: int, value: float, seconds: Optional[float] = None) -> None:
        """``seconds``: how long the epoch took to train, where the backend could time it."""
        self.data.add(trial_index, resource, rank_key(value, self.mode))
        self.cost.add(trial_index, resource, seconds)

    def remember(self, trial_index: int, config: Mapping[str, Any]) -> None:
        self.configs[trial_index] = dict(config)
        self.x[trial_index] = self.candidates.encode(config)

    def restore(self, trials: Iterable[tuple[int, Mapping[str, Any], Sequence[tuple]]]) -> None:
        """Rebuild from records: (trial id, configuration, observations as (resource, value) or
        (resource, value, seconds the epoch took or None))."""
        for trial_id, config, observations in trials:
            self.remember(trial_id, config)
            for resource, value, *seconds in observations:
                self.on_result(trial_id, resource, value, seconds[0] if seconds else None)

    def snapshot(self) -> "ModelSearcher":
        """A copy of the records a fit can use while this searcher keeps taking results (see
        :mod:`hpo_operator.search.background`): dictionaries copied, their values shared (never mutated)."""
        other = copy.copy(self)
        other.configs = dict(self.configs)
        other.x = dict(self.x)
        other.data = copy.copy(self.data)
        other.data.by_level = {r: dict(v) for r, v in self.data.by_level.items()}
        other.cost = self.cost.snapshot()
        return other

    def adopt_cache(self, other: "ModelSearcher") -> None:
        """Keep what a fit on a snapshot learned that is costly to redo (GP hyperparameters)."""

    # ---- picking -------------------------------------------------------------
    def random_pick(self, trial_index: int, rng: np.random.Generator) -> dict[str, Any]:
        if self.candidates.finite:
            # The first unused row of the seed's permutation: the rows a random searcher without
            # repeats would draw, in its order.
            order = np.random.default_rng([self.seed, 0x7AB]).permutation(self.candidates.n_rows)
            used = np.zeros(self.candidates.n_rows, dtype=bool)
            used[[int(c["row"]) for c in self.configs.values()]] = True
            return self.candidates.decode_row(int(order[np.argmax(~used[order])]))
        return self.candidates.decode(self.candidates.uniform(rng, 1)[0])

    def model_pick(self, rng: np.random.Generator, pending: list[int]) -> Optional[dict[str, Any]]:
        """The candidate the model scores best, or None while the model has too little data."""
        # One BLAS thread: the matrices are small, and threads contending for a few shared cores
        # made a fit several times slower.
        with _blas().limit(limits=1):
            model = self.fit(pending)
            if model is None:
                return None
            if self.candidates.finite:
                unused = self.candidates.unused_rows(list(self.configs.values()))
                return self.candidates.decode_row(self.pick_row(model, rng, unused))
            x = self.propose(model, rng)
            scores = self.score(model, x)
            return self.candidates.decode(x[int(np.argmax(scores))])

    def pick_row(self, model: Any, rng: np.random.Generator, unused: np.ndarray) -> int:
        """Of a finite space's unused rows (a table, in simulation), the one to try: the best scored."""
        return int(unused[int(np.argmax(self.score(model, self.candidates.x[unused])))])

    # ---- the model -----------------------------------------------------------
    @abstractmethod
    def fit(self, pending: list[int]) -> Optional[Any]:
        """A model of the observations on record (None if too few)."""

    @abstractmethod
    def score(self, model: Any, x: np.ndarray) -> np.ndarray:
        """Acquisition value of each candidate row of ``x``: larger is better."""

    @abstractmethod
    def propose(self, model: Any, rng: np.random.Generator) -> np.ndarray:
        """Candidate feature vectors to score, for a continuous space (valid configurations)."""


__all__ = ["Data", "ModelSearcher"]
