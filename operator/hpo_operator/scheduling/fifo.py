"""FIFO: every trial trains to ``max_resource`` (random or grid search, no early stopping)."""

from __future__ import annotations

from typing import Optional

from hpo_operator.scheduling.base import Decision, Job, Scheduler, TrialRecord


class FIFO(Scheduler):
    def next_job(self) -> Optional[Job]:
        return self._new_trial(self.max_resource) if self.may_start_new() else None

    def _decide(self, trial: TrialRecord, resource: int, value: float) -> Decision:
        return Decision.CONTINUE
