"""Synchronous successive halving (Jamieson & Talwalkar, 2016), pause and resume.

Trials come in brackets of ``n`` (default ``eta ** (rungs - 1)``, at least 1).
Every member trains to the first rung and pauses; once the whole rung has
reported, the top ``max(1, floor(n_k / eta))`` resume to the next rung, and so
on up to ``max_resource``. The next bracket starts when the previous one has
no more work. Workers wait at rung boundaries: that idle time is what the
asynchronous variants remove.
"""

from __future__ import annotations

from typing import Optional

from hpo_operator.scheduling.base import Decision, Job, Mode, Scheduler, TrialRecord, rung_levels


class SynchronousSuccessiveHalving(Scheduler):
    def __init__(self, mode: Mode, min_resource: int, max_resource: int, reduction_factor: float = 3,
                 bracket_size: Optional[int] = None, max_trials: Optional[int] = None):
        super().__init__(mode, max_resource, max_trials)
        self.eta = reduction_factor
        self.levels = rung_levels(min_resource, max_resource, reduction_factor) + [max_resource]
        self.bracket_size = bracket_size or max(1, int(round(reduction_factor ** (len(self.levels) - 1))))
        self._members: dict[int, list[int]] = {}  # bracket -> trial ids

    def _on_new_trial(self, trial: TrialRecord) -> None:
        self._members.setdefault(trial.bracket, []).append(trial.trial_id)

    def next_job(self) -> Optional[Job]:
        current = max(self._members) if self._members else 0
        members = self._members.get(current, [])
        if len(members) < self.bracket_size and self.may_start_new():
            return self._new_trial(self.levels[0], bracket=current)
        job = self._promotion(members)
        if job is not None:
            trial = self.trials[job.trial_id]
            self._set(trial, status="running", until=job.until)
            return Job.resume(job.trial_id, job.until, trial.bracket)
        if self._bracket_done(members) and self.may_start_new():
            return self._new_trial(self.levels[0], bracket=current + 1)
        return None

    def _promotion(self, members: list[int]) -> Optional[Job]:
        """The next resume of a completed rung, or None while a rung is still training."""
        alive = [self.trials[t] for t in members if self.trials[t].status != "failed"]
        for k, level in enumerate(self.levels[:-1]):
            at_rung = [t for t in alive if t.until >= level]
            if any(t.until == level and t.status == "running" for t in at_rung):
                return None  # rung k still training: synchronous, so wait
            reported = sorted(
                (self.key(self._value_at(t, level)), t.trial_id) for t in at_rung if self._value_at(t, level) is not None
            )
            quota = max(1, int(len(reported) // self.eta))
            for _, tid in reported[:quota]:
                t = self.trials[tid]
                if t.until == level and t.status == "paused":
                    return Job.resume(tid, self.levels[k + 1], t.bracket)
        return None

    def _bracket_done(self, members: list[int]) -> bool:
        if len(members) < self.bracket_size and self.may_start_new():
            return False
        return all(self.trials[t].status != "running" for t in members) and self._promotion(members) is None

    @staticmethod
    def _value_at(trial: TrialRecord, level: int) -> Optional[float]:
        for r, v in trial.observations:
            if r == level:
                return v
        return None

    def _decide(self, trial: TrialRecord, resource: int, value: float) -> Decision:
        if resource >= self.max_resource or resource < trial.until:
            return Decision.CONTINUE
        return Decision.PAUSE
