"""One experiment as the views see it, whichever backend ran it.

A local run (``hpo-runs/<experiment>/results.json``) and a cluster experiment
(the HPOExperiment and its HPOTrials, as ``kubectl get`` returns them) are
turned into the same :class:`ExperimentSnapshot`, so ``hpo status``, ``hpo
plot`` and ``hpo report`` show both the same way. Pure: the callers read the
files and objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from hpo_operator.resources import FINISHED_EXPERIMENT_PHASES, ExperimentPhase, TrialPhase
from hpo_operator.scheduling import rank_key
from hpo_operator.scheduling.base import rung_levels

FINISHED_PHASES = FINISHED_EXPERIMENT_PHASES | {ExperimentPhase.INTERRUPTED}


@dataclass(frozen=True)
class Point:
    """One reported epoch of a trial. ``time``: unix seconds when the trainer wrote it (None if unknown)."""

    epoch: int
    value: Optional[float]  # None: NaN or infinite (ranks worst)
    time: Optional[float] = None


@dataclass(frozen=True)
class TrialSnapshot:
    name: str
    trial_id: int
    config: dict[str, Any]
    phase: str
    points: tuple[Point, ...] = ()
    bracket: int = 0
    until: int = 0
    attempts: int = 0
    failures: int = 0
    message: str = ""

    @property
    def last_epoch(self) -> int:
        return self.points[-1].epoch if self.points else 0

    @property
    def last_value(self) -> Optional[float]:
        return self.points[-1].value if self.points else None

    def best_value(self, mode: str) -> Optional[float]:
        values = [p.value for p in self.points if _finite(p.value)]
        if not values:
            return None
        return min(values) if mode == "min" else max(values)


@dataclass(frozen=True)
class Best:
    trial: str
    value: Optional[float]
    epoch: int
    complete: bool
    config: dict[str, Any]
    checkpoint: Optional[str] = None


@dataclass(frozen=True)
class WarningEvent:
    """A Warning Event of the experiment or one of its trials (cluster only)."""

    time: str
    object: str
    reason: str
    message: str
    count: int = 1


@dataclass(frozen=True)
class ExperimentSnapshot:
    name: str
    where: str  # "local run hpo-runs/x" or "cluster namespace/name", for titles
    phase: str
    metric: str
    mode: str
    spec: dict[str, Any]  # camelCase, as in the manifest
    trials: tuple[TrialSnapshot, ...]
    best: Optional[Best] = None
    reason: Optional[str] = None
    message: Optional[str] = None
    started_at: Optional[float] = None  # unix seconds
    elapsed_s: Optional[float] = None
    warnings: tuple[WarningEvent, ...] = field(default_factory=tuple)

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED_PHASES

    @property
    def scheduler(self) -> dict[str, Any]:
        return self.spec.get("scheduler") or {}

    @property
    def max_resource(self) -> int:
        return int(self.scheduler.get("maxResource") or max((t.last_epoch for t in self.trials), default=1))

    @property
    def max_trials(self) -> Optional[int]:
        return (self.spec.get("budget") or {}).get("maxTrials")

    def counts(self) -> dict[str, int]:
        out = {p.value: 0 for p in TrialPhase}
        for t in self.trials:
            out[t.phase] = out.get(t.phase, 0) + 1
        return out

    def rungs(self, bracket: int = 0) -> list[int]:
        """The rung levels a trial of ``bracket`` pauses or is judged at (maxResource not included)."""
        s = self.scheduler
        algorithm = s.get("algorithm", "asha")
        if algorithm in ("fifo", "median"):
            return []
        eta = float(s.get("reductionFactor", 3))
        low = int(round(int(s.get("minResource", 1)) * eta ** bracket))
        return rung_levels(low, self.max_resource, eta) if low < self.max_resource else []


def _finite(v: Optional[float]) -> bool:
    return v is not None and math.isfinite(v)


def ranked(snapshot: ExperimentSnapshot) -> list[TrialSnapshot]:
    """Trials by their latest value (the one ASHA ranks and ``kubectl get hpt`` shows), best first;
    trials without a value last, then by trial id."""
    return sorted(snapshot.trials, key=lambda t: (rank_key(t.last_value, snapshot.mode), -t.last_epoch, t.trial_id))


@dataclass(frozen=True)
class RungCount:
    level: int
    reached: int  # trials that reported this epoch
    went_on: int  # of those, trials that trained beyond it


def rung_counts(snapshot: ExperimentSnapshot) -> list[RungCount]:
    """How many trials reached each rung (all brackets) and how many of them went on; maxResource last."""
    levels = sorted({r for b in {t.bracket for t in snapshot.trials} | {0} for r in snapshot.rungs(b)})
    levels.append(snapshot.max_resource)
    return [RungCount(level, sum(t.last_epoch >= level for t in snapshot.trials),
                      sum(t.last_epoch > level for t in snapshot.trials)) for level in levels]


@dataclass(frozen=True)
class Progress:
    """The experiment's best value after each reported epoch, in the order the epochs were written."""

    seconds: list[float]  # since the first epoch's run started (the experiment's start when known)
    epochs: list[int]  # epochs reported so far, all trials together
    best_any: list[Optional[float]]  # best value at any epoch so far
    best_full: list[Optional[float]]  # best value of a trial trained to maxResource so far


def progress(snapshot: ExperimentSnapshot) -> Optional[Progress]:
    """None when the epochs carry no times (results written before times were recorded)."""
    points = [(p.time, t.trial_id, p) for t in snapshot.trials for p in t.points]
    if not points or any(time is None for time, _, _ in points):
        return None
    points.sort(key=lambda x: (x[0], x[1], x[2].epoch))
    start = snapshot.started_at if snapshot.started_at is not None else points[0][0]
    start = min(start, points[0][0])
    better = (lambda a, b: a < b) if snapshot.mode == "min" else (lambda a, b: a > b)
    out = Progress([], [], [], [])
    best_any = best_full = None
    for i, (time, _, p) in enumerate(points, 1):
        if _finite(p.value):
            if best_any is None or better(p.value, best_any):
                best_any = p.value
            if p.epoch >= snapshot.max_resource and (best_full is None or better(p.value, best_full)):
                best_full = p.value
        out.seconds.append(time - start)
        out.epochs.append(i)
        out.best_any.append(best_any)
        out.best_full.append(best_full)
    return out


def fmt_value(v: Optional[float]) -> str:
    return "-" if v is None else ("nan" if not math.isfinite(v) else f"{v:.4g}")


def unix_time(stamp: Optional[str]) -> Optional[float]:
    """An RFC 3339 timestamp from the API server (``2026-12-01T14:07:09Z``) as unix seconds."""
    if not stamp:
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
