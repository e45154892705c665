"""Successive halving that judges only at rungs whose early ranks it has seen to hold.

ASHA stops or pauses a trial on its rank after few epochs; where early
epochs rank configurations differently from the end, that throws away the
best ones. This scheduler measures, online, how well each rung's ranks agree
with a later fidelity, and judges at a rung only while they agree:

* A share of new trials (``probe_fraction``, seeded by trial id), and every
  new trial while no rung is trusted, are *probes*: trained to
  ``max_resource`` and never judged. Their values at every level are an
  unbiased sample (no rung selected them), unlike the trials that reached a
  later level because a rung promoted them.
* Rung ``k`` is *trusted* when, among probes observed at ``r_k`` and at the
  highest later level that at least ``min_pairs`` of them reached, the
  Spearman rank correlation is confidently above ``min_agreement`` (the
  lower one-sigma bound of its Fisher interval).
* A new trial that is not a probe starts in bracket ``s``, the lowest
  trusted rung, and is judged (ASHA's rules, ``type: promotion`` or
  ``stopping``) at trusted rungs from ``s`` up; it runs through the others.
* The *first wave*, the probes started while no rung was trusted, holds
  every worker until trust is measured. Once a rung is trusted, a
  first-wave trial that reaches it or any rung above it runs on only while
  it ranks in the better half of the rung's records (``FIRST_WAVE_KEEP``);
  otherwise it pauses there (promotion type: a candidate ASHA may promote
  later) or stops (stopping type). The half, not ASHA's top ``1/eta``: these
  trials were started blind and are the furthest trained, and where the
  first trials to finish already win, pausing them is what delays the
  target (docs/schedulers.md has the figures of both).

Where the first epochs mislead, no rung is trusted and every trial trains to
the end, as random search does; where they rank well, rung 0 is trusted
after the first probes and trials stop as early as ASHA's. The bracket (the
rung index a trial was first judged from, ``len(levels)`` for a probe and
``len(levels) + 1`` for a first-wave probe) is part of the trial's record,
and trust is a function of the probes' recorded values, so :meth:`restore`
rebuilds the same scheduler.
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Literal, Optional

import numpy as np

from hpo_operator.rank_agreement import MAX_EVIDENCE, MIN_AGREEMENT, MIN_PAIRS, lower_bound, rank_correlation
from hpo_operator.scheduling.base import Decision, Job, Mode, Scheduler, TrialRecord, rung_levels
from hpo_operator.scheduling.rungs import Rung

FIRST_WAVE_KEEP = 0.5  # share of a trusted rung's records a first-wave trial must rank within to run on


class TrustedRungs(Scheduler):
    def __init__(self, mode: Mode, min_resource: int, max_resource: int, reduction_factor: float = 3,
                 type: Literal["promotion", "stopping"] = "promotion", max_trials: Optional[int] = None,
                 seed: int = 0, probe_fraction: float = 0.1, min_pairs: int = MIN_PAIRS,
                 min_agreement: float = MIN_AGREEMENT):
        super().__init__(mode, max_resource, max_trials)
        self.eta = reduction_factor
        self.type = type
        self.seed = seed
        self.probe_fraction = probe_fraction
        self.min_pairs = min_pairs
        self.min_agreement = min_agreement
        self.levels = rung_levels(min_resource, max_resource, reduction_factor)
        self.rungs = [Rung(r) for r in self.levels]
        self.index_of = {r: k for k, r in enumerate(self.levels)}
        self.probe_bracket = len(self.levels)
        self.first_wave_bracket = len(self.levels) + 1  # probes started while no rung was trusted
        # Probes' values (rank keys) at each rung level and at max_resource.
        self._probe_values: dict[int, dict[int, float]] = {r: {} for r in self.levels + [max_resource]}
        # The same probes' ids, sorted, so the newest pairs are found without sorting every id on record
        # each time trust is measured again (that sort made decisions 10x slower at 100k trials).
        self._probe_ids: dict[int, list[int]] = {r: [] for r in self._probe_values}
        # Each rung's trust, cached; new probe evidence at a level clears the rungs at or below it
        # (the only agreements it enters).
        self._trust: list[Optional[bool]] = [None] * len(self.levels)
        self._leaders: Counter = Counter()  # granted resource -> running or completed trials

    # ---- trust -----------------------------------------------------------------
    def agreement(self, k: int) -> tuple[Optional[float], int, int]:
        """(Spearman correlation, pairs, reference level) between rung ``k`` and the highest later
        level at least ``min_pairs`` probes reached; correlation None without enough pairs."""
        here = self._probe_values[self.levels[k]]
        for level in sorted(self._probe_values, reverse=True):
            if level <= self.levels[k]:
                break
            ids = self._newest_pairs(here, level)
            later = self._probe_values[level]
            if len(ids) >= self.min_pairs:
                a = np.array([here[t] for t in ids])
                b = np.array([later[t] for t in ids])
                return rank_correlation(a, b), len(ids), level
        return None, 0, 0

    def _newest_pairs(self, here: dict[int, float], level: int) -> list[int]:
        """The newest ``MAX_EVIDENCE`` probe ids observed at ``level`` and in ``here``, ascending."""
        ids = self._probe_ids[level]
        newest = [t for t in ids[-MAX_EVIDENCE:] if t in here]
        if len(newest) == MAX_EVIDENCE or len(ids) <= MAX_EVIDENCE:
            return newest  # the usual case: a probe reaches a later level only after the earlier ones
        picked = []
        for t in reversed(ids):
            if t in here:
                picked.append(t)
                if len(picked) == MAX_EVIDENCE:
                    break
        return picked[::-1]

    def trusted(self) -> list[bool]:
        for k, known in enumerate(self._trust):
            if known is None:
                rho, n, _ = self.agreement(k)
                self._trust[k] = rho is not None and lower_bound(rho, n) >= self.min_agreement
        return self._trust

    def _bracket_for_new(self, trial_id: int) -> int:
        trusted = self.trusted()
        if not any(trusted):
            return self.first_wave_bracket
        if np.random.default_rng([self.seed, trial_id, 0x7257]).random() < self.probe_fraction:
            return self.probe_bracket
        return trusted.index(True)

    def _judged_at(self, trial: TrialRecord, k: int) -> bool:
        return trial.bracket <= k < self.probe_bracket and self.trusted()[k]

    def _first_wave_falls_behind(self, trial: TrialRecord, k: int) -> bool:
        """A first-wave trial at rung ``k``, with a rung at or below ``k`` trusted, ranks outside the
        better half of the rung's records."""
        if trial.bracket != self.first_wave_bracket or not any(self.trusted()[:k + 1]):
            return False
        return not self.rungs[k].ranks_within(trial.trial_id, FIRST_WAVE_KEEP)

    def _next_stop(self, trial: TrialRecord, after: int) -> int:
        """Where a trial that passed level ``after`` pauses next (promotion type): the next rung that
        judges it, or ``max_resource``."""
        for k, level in enumerate(self.levels):
            if level > after and self._judged_at(trial, k):
                return level
        return self.max_resource

    # ---- the contract ----------------------------------------------------------
    def next_job(self) -> Optional[Job]:
        if self.type == "promotion":
            job = self._pick_promotion()
            if job is not None:
                self._grant(job)
                return job
        if self.may_start_new():
            bracket = self._bracket_for_new(self._next_id)
            trial_id = self._next_id
            job = self._new_trial(self.max_resource, bracket)
            if self.type == "promotion":
                self._set(self.trials[trial_id], until=self._next_stop(self.trials[trial_id], 0))
                job = Job.new(trial_id, self.trials[trial_id].until, bracket)
            return job
        return None

    def _decide(self, trial: TrialRecord, resource: int, value: float) -> Decision:
        k = self.index_of.get(resource)
        if resource >= self.max_resource or k is None:
            return Decision.CONTINUE
        if self._first_wave_falls_behind(trial, k):
            if self.type == "stopping":
                return Decision.STOP
            self.rungs[k].make_candidate(trial.trial_id)  # ASHA may promote it from here later
            self._set(trial, until=resource)
            return Decision.PAUSE
        if self.type == "stopping":
            if self._judged_at(trial, k) and not self.rungs[k].continues(trial.trial_id, self.eta):
                return Decision.STOP
            return Decision.CONTINUE
        if resource < trial.until:
            return Decision.CONTINUE  # already granted more (a restored run, or a rung it runs through)
        if not self._judged_at(trial, k):
            # Launched to pause here, but this rung is no longer trusted: run on to the next that is.
            self.rungs[k].drop_candidate(trial.trial_id)
            self._set(trial, until=self._next_stop(trial, resource))
            return Decision.CONTINUE
        job = self._pick_promotion()
        if job is not None and job.trial_id == trial.trial_id:
            self._grant(job)
            return Decision.CONTINUE
        return Decision.PAUSE

    # ---- promotion (ASHA, Algorithm 2, over trusted rungs) -----------------------
    def _pick_promotion(self) -> Optional[Job]:
        for k in range(len(self.levels) - 1, -1, -1):
            tid = self.rungs[k].promotable(self.eta)
            if tid is not None:
                return Job.resume(tid, self._next_stop(self.trials[tid], self.levels[k]), self.trials[tid].bracket)
        if not self.may_start_new():
            # End game: no new trials may start; promote the best paused trial of the highest filled
            # rung unless a trial already leads past it (as ASHA does).
            for k in range(len(self.levels) - 1, -1, -1):
                tid = self.rungs[k].best_candidate()
                if tid is None:
                    continue
                if any(until > self.levels[k] and n > 0 for until, n in self._leaders.items()):
                    return None
                return Job.resume(tid, self._next_stop(self.trials[tid], self.levels[k]), self.trials[tid].bracket)
        return None

    def _grant(self, job: Job) -> None:
        trial = self.trials[job.trial_id]
        k = self.index_of.get(trial.until)
        if k is not None:
            self.rungs[k].drop_candidate(trial.trial_id)
        self._set(trial, status="running", until=job.until)

    def _on_change(self, trial: TrialRecord, old_status, old_until) -> None:
        if old_status in ("running", "completed"):
            self._leaders[old_until] -= 1
        if trial.status in ("running", "completed"):
            self._leaders[trial.until] += 1

    # ---- hooks -----------------------------------------------------------------
    def _record(self, trial: TrialRecord, resource: int, value: float) -> None:
        key = self.key(value)
        if trial.bracket >= self.probe_bracket and resource in self._probe_values:
            if trial.trial_id not in self._probe_values[resource]:
                bisect.insort(self._probe_ids[resource], trial.trial_id)
            self._probe_values[resource][trial.trial_id] = key
            for k, level in enumerate(self.levels):
                if level <= resource:
                    self._trust[k] = None
        k = self.index_of.get(resource)
        if k is None:
            return
        candidate = self.type == "promotion" and resource >= trial.until
        self.rungs[k].add(trial.trial_id, key, candidate)

    def _forget_candidate(self, trial: TrialRecord) -> None:
        k = self.index_of.get(trial.until)
        if k is not None:
            self.rungs[k].drop_candidate(trial.trial_id)


__all__ = ["TrustedRungs"]
