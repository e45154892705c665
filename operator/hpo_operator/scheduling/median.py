"""Median stopping rule (Golovin et al., "Google Vizier", KDD 2017).

At resource ``r >= grace``, stop a trial whose best value so far is worse than
the median of the other trials' running averages at ``r``, once at least
``min_samples`` other trials reported at ``r``.
"""

from __future__ import annotations

import math
from typing import Optional

from sortedcontainers import SortedList

from hpo_operator.scheduling.base import Decision, Job, Mode, Scheduler, TrialRecord


class MedianStopping(Scheduler):
    def __init__(self, mode: Mode, grace: int, max_resource: int, min_samples: int = 3,
                 max_trials: Optional[int] = None):
        super().__init__(mode, max_resource, max_trials)
        self.grace = grace
        self.min_samples = min_samples
        # resource -> sorted (running-average key, trial id); each entry is fixed once written.
        self._averages: dict[int, SortedList] = {}
        self._sums: dict[int, tuple[float, int, float]] = {}  # trial -> (sum of keys, count, best key)

    def next_job(self) -> Optional[Job]:
        return self._new_trial(self.max_resource) if self.may_start_new() else None

    def _record(self, trial: TrialRecord, resource: int, value: float) -> None:
        key = self.key(value)
        total, count, best = self._sums.get(trial.trial_id, (0.0, 0, math.inf))
        total, count, best = total + key, count + 1, min(best, key)
        self._sums[trial.trial_id] = (total, count, best)
        self._averages.setdefault(resource, SortedList()).add((total / count, trial.trial_id))

    def _decide(self, trial: TrialRecord, resource: int, value: float) -> Decision:
        if resource < self.grace or resource >= self.max_resource:
            return Decision.CONTINUE
        others = self._averages[resource]
        n_others = len(others) - 1
        if n_others < self.min_samples:
            return Decision.CONTINUE
        own = (self._sums[trial.trial_id][0] / self._sums[trial.trial_id][1], trial.trial_id)
        # Median of the others: the sorted list without the trial's own entry.
        def kth(i: int) -> float:
            j = others.index(own)
            return others[i if i < j else i + 1][0]
        mid = n_others // 2
        median = kth(mid) if n_others % 2 else 0.5 * (kth(mid - 1) + kth(mid))
        best = self._sums[trial.trial_id][2]
        return Decision.STOP if best > median else Decision.CONTINUE
