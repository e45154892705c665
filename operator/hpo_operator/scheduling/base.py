"""The scheduler contract shared by every backend.

A backend drives a scheduler through one loop:

* a worker slot is free -> ``next_job()``: resume a paused trial up to a rung,
  start a new trial, or nothing for now;
* an epoch result arrived -> ``on_result(trial_id, resource, value)``:
  ``CONTINUE``, ``PAUSE`` (the trial reached the rung it was launched for) or
  ``STOP``;
* a run ended for good -> ``on_trial_end(trial_id, outcome)``.

Schedulers are pure and deterministic: no clock, no I/O, no randomness that
is not seeded by the trial id. Their whole state is a function of the trials'
records (bracket, granted resource, observations), so :meth:`restore` rebuilds
a scheduler that makes the same decisions as the one that was lost.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from typing import Iterable, Literal, Optional

Mode = Literal["min", "max"]
Outcome = Literal["completed", "failed", "stopped"]


class Decision(str, Enum):
    CONTINUE = "continue"
    PAUSE = "pause"
    STOP = "stop"


@dataclass(frozen=True)
class Job:
    """What a free worker should do: start trial ``trial_id`` or resume it, training up to ``until``."""

    kind: Literal["new", "resume"]
    trial_id: int
    until: int
    bracket: int = 0

    @staticmethod
    def new(trial_id: int, until: int, bracket: int = 0) -> "Job":
        return Job("new", trial_id, until, bracket)

    @staticmethod
    def resume(trial_id: int, until: int, bracket: int = 0) -> "Job":
        return Job("resume", trial_id, until, bracket)


@dataclass
class TrialRecord:
    """What a scheduler knows of one trial; enough to rebuild it after a restart."""

    trial_id: int
    bracket: int = 0
    until: int = 0  # resource granted so far
    status: Literal["running", "paused", "completed", "failed", "stopped"] = "running"
    observations: list[tuple[int, float]] = field(default_factory=list)  # (resource, value), resource ascending


def rank_key(value: float, mode: Mode) -> float:
    """Smaller is better. NaN and infinities rank worst in either mode."""
    if value is None or not math.isfinite(value):
        return math.inf
    return value if mode == "min" else -value


def rung_levels(min_resource: int, max_resource: int, eta: float) -> list[int]:
    """Rung resources ``min_resource * eta**k`` below ``max_resource`` (rounded, distinct).

    ``max_resource`` itself is not a rung: a trial that reaches it is complete.
    """
    levels: list[int] = []
    k = 0
    while True:
        r = int(round(min_resource * eta**k))
        if r >= max_resource:
            return levels
        if not levels or r > levels[-1]:
            levels.append(r)
        k += 1


class Scheduler(ABC):
    """Base class: trial bookkeeping, restore, and the ``max_trials`` budget."""

    def __init__(self, mode: Mode, max_resource: int, max_trials: Optional[int] = None):
        self.mode = mode
        self.max_resource = max_resource
        self.max_trials = max_trials
        self.trials: dict[int, TrialRecord] = {}
        self._next_id = 0
        self._new_trials_closed = False

    # ---- the contract --------------------------------------------------------
    @abstractmethod
    def next_job(self) -> Optional[Job]:
        """A free worker asks for work; None means nothing to do now."""

    @abstractmethod
    def _decide(self, trial: TrialRecord, resource: int, value: float) -> Decision:
        """Decision for a result already recorded in ``trial``."""

    def on_result(self, trial_id: int, resource: int, value: float) -> Decision:
        trial = self.trials[trial_id]
        if trial.observations and resource <= trial.observations[-1][0]:
            raise ValueError(f"trial {trial_id}: resource {resource} reported after {trial.observations[-1][0]}")
        trial.observations.append((resource, value))
        self._record(trial, resource, value)
        decision = self._decide(trial, resource, value)
        if decision is Decision.STOP:
            self._set(trial, status="stopped")
        elif decision is Decision.PAUSE:
            self._set(trial, status="paused")
        elif resource >= self.max_resource:
            self._set(trial, status="completed")
        return decision

    def on_trial_end(self, trial_id: int, outcome: Outcome) -> None:
        """The trial will not run again (completed its resource, failed for good, or was stopped)."""
        trial = self.trials[trial_id]
        self._set(trial, status=outcome)
        self._forget_candidate(trial)

    # ---- budget --------------------------------------------------------------
    def close_new_trials(self) -> None:
        """No further new trials (the searcher ran out of configurations, say)."""
        self._new_trials_closed = True

    def may_start_new(self) -> bool:
        if self._new_trials_closed:
            return False
        return self.max_trials is None or self._next_id < self.max_trials

    @property
    def next_trial_id(self) -> int:
        """Id the next new trial will get."""
        return self._next_id

    def until_of(self, trial_id: int) -> int:
        """Resource the trial is currently allowed to train to."""
        return self.trials[trial_id].until

    # ---- restart safety ------------------------------------------------------
    def restore(self, records: Iterable[TrialRecord]) -> None:
        """Rebuild from trial records (as kept in the API objects or a results file)."""
        for rec in sorted(records, key=lambda r: r.trial_id):
            trial = TrialRecord(rec.trial_id, rec.bracket, rec.until, rec.status, [])
            self.trials[rec.trial_id] = trial
            self._next_id = max(self._next_id, rec.trial_id + 1)
            self._on_new_trial(trial)
            self._on_change(trial, None, None)
            for resource, value in sorted(rec.observations):
                trial.observations.append((resource, value))
                self._record(trial, resource, value)
            if rec.status in ("failed", "completed", "stopped"):
                self._forget_candidate(trial)

    # ---- helpers for subclasses ----------------------------------------------
    def _new_trial(self, until: int, bracket: int = 0) -> Job:
        trial = TrialRecord(self._next_id, bracket, until, "running")
        self.trials[trial.trial_id] = trial
        self._next_id += 1
        self._on_new_trial(trial)
        self._on_change(trial, None, None)
        return Job.new(trial.trial_id, until, bracket)

    def _set(self, trial: TrialRecord, status: Optional[str] = None, until: Optional[int] = None) -> None:
        """Every change of a trial's status or granted resource goes through here."""
        before = (trial.status, trial.until)
        if status is not None:
            trial.status = status  # type: ignore[assignment]
        if until is not None:
            trial.until = until
        if (trial.status, trial.until) != before:
            self._on_change(trial, *before)

    def _on_change(self, trial: TrialRecord, old_status: Optional[str], old_until: Optional[int]) -> None:
        """Hook: a trial's status or granted resource changed (old values None for a new trial)."""

    def _on_new_trial(self, trial: TrialRecord) -> None:
        """Hook: a trial joined (new or restored)."""

    def _record(self, trial: TrialRecord, resource: int, value: float) -> None:
        """Hook: file a result in the scheduler's structures without deciding."""

    def _forget_candidate(self, trial: TrialRecord) -> None:
        """Hook: the trial can never be resumed again."""

    def key(self, value: float) -> float:
        return rank_key(value, self.mode)
