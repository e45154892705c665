"""How long an epoch of a configuration takes, learnt from the trials' epoch times.

The gp ranks candidates by expected improvement per second of training
(Snoek et al., 2012): where many configurations are about as promising, the
one that trains fastest reaches a result first. The model is a GP on
``log(seconds per epoch)`` over the configuration's features: epoch time is
set by the configuration (batch size, width, depth) far more than by chance.

A trial's seconds per epoch is the median of its first ``EPOCHS_KEPT`` timed epochs, so that an
epoch whose time includes a pause or a restart (a backend that cannot tell
runs apart) does not move it. Epochs whose time is unknown are not counted;
with fewer than ``MIN_TRIALS`` timed trials there is no model, and the gp
ranks by expected improvement alone.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from hpo_operator.search.gp_kernel import Hyper, factor, fit_hyper, matern52

MIN_TRIALS = 4
MAX_TRIALS = 200  # the newest timed trials a fit uses
EPOCHS_KEPT = 9  # timed epochs kept per trial: enough for a median, and memory stays flat at 10,000 trials

_changes = itertools.count(1)


def epoch_seconds(epochs: Sequence[int], times: Sequence[Optional[float]],
                  runs: Optional[Sequence[Optional[int]]] = None) -> dict[int, float]:
    """Seconds each epoch took, from the unix times the trainer wrote consecutive epochs.

    An epoch is timed only when the one before it was written by the same run (``runs``: the
    attempt of each record, where the backend keeps one): the first epoch of a run also holds the
    pod's start and the checkpoint load, which say nothing about the configuration."""
    out: dict[int, float] = {}
    for i in range(1, len(epochs)):
        t0, t1 = times[i - 1], times[i]
        if t0 is None or t1 is None or epochs[i] != epochs[i - 1] + 1:
            continue
        if runs is not None and (runs[i] is None or runs[i] != runs[i - 1]):
            continue
        if t1 > t0:
            out[int(epochs[i])] = float(t1 - t0)
    return out


@dataclass(frozen=True)
class CostModel:
    inputs: np.ndarray
    hyper: Hyper
    weights: np.ndarray
    mean: float
    scale: float

    def log_seconds(self, z: np.ndarray) -> np.ndarray:
        """Predicted log seconds per epoch at feature rows ``z``."""
        k = matern52(z, self.inputs, self.hyper.lengthscales, self.hyper.variance)
        return self.mean + self.scale * (k @ self.weights)


class TrainingCost:
    """The timed epochs of every trial, and the model fitted on them (kept until a time arrives)."""

    def __init__(self) -> None:
        self.seconds: dict[int, dict[int, float]] = {}  # trial -> epoch -> seconds it took
        self.version = 0
        self._hyper: Optional[Hyper] = None
        self._hyper_n = 0
        self._fitted: Optional[tuple[int, CostModel]] = None

    def add(self, trial_id: int, epoch: int, seconds: Optional[float]) -> None:
        if seconds is None or not math.isfinite(seconds) or seconds <= 0:
            return
        kept = self.seconds.get(trial_id, {})
        if len(kept) >= EPOCHS_KEPT and epoch not in kept:
            return
        # A new dict, not an update: snapshots share the old one. An epoch timed again replaces its time.
        self.seconds[trial_id] = {**kept, int(epoch): float(seconds)}
        self.version = next(_changes)

    def snapshot(self) -> "TrainingCost":
        other = TrainingCost()
        other.seconds = dict(self.seconds)
        other.version, other._hyper, other._hyper_n, other._fitted = (self.version, self._hyper, self._hyper_n,
                                                                      self._fitted)
        return other

    def adopt(self, other: "TrainingCost") -> None:
        """Keep hyperparameters a fit on a snapshot found (the costly part of a fit)."""
        if other._hyper_n > self._hyper_n:
            self._hyper, self._hyper_n = other._hyper, other._hyper_n

    def model(self, features: Callable[[list[int]], np.ndarray]) -> Optional[CostModel]:
        """The model of seconds per epoch (None: too few timed trials); ``features``: trial ids -> rows."""
        if self._fitted is not None and self._fitted[0] == self.version:
            return self._fitted[1]
        ids = sorted(self.seconds)[-MAX_TRIALS:]
        if len(ids) < MIN_TRIALS:
            return None
        z = features(ids)
        y = np.log([float(np.median(list(self.seconds[t].values()))) for t in ids])
        mean, scale = float(y.mean()), float(y.std()) or 1.0
        y = (y - mean) / scale
        if self._hyper is None or len(ids) >= 1.25 * self._hyper_n:
            self._hyper, self._hyper_n = fit_hyper(z, y), len(ids)
        fitted = CostModel(z, self._hyper, factor(z, y, self._hyper)[1], mean, scale)
        self._fitted = (self.version, fitted)
        return fitted


__all__ = ["CostModel", "MIN_TRIALS", "TrainingCost", "epoch_seconds"]
