"""Asynchronous Successive Halving (Li et al., MLSys 2020) and asynchronous Hyperband.

``promotion`` type (pause and resume): a new trial trains to the first rung
and pauses; ``next_job`` promotes, highest rung first, the best paused trial
that ranks in the top 1/eta of its rung (``rungs.top_count``), else starts a new
trial. ``stopping`` type: a trial trains to ``max_resource`` unless, at a
rung, it ranks outside the top ``max(1, floor(n_k / eta))``.

Hyperband runs several ASHA brackets side by side; bracket ``s`` starts at
``min_resource * eta**s``. A new trial's bracket is drawn with the
probabilities of synchronous Hyperband, from a stream seeded by its trial id.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal, Optional

import numpy as np

from hpo_operator.scheduling.base import Decision, Job, Mode, Scheduler, TrialRecord, rung_levels
from hpo_operator.scheduling.rungs import Rung


class _Bracket:
    def __init__(self, levels: list[int]):
        self.rungs = [Rung(r) for r in levels]
        self.index_of = {r: k for k, r in enumerate(levels)}

    def level(self, k: int) -> int:
        return self.rungs[k].level

    def next_level(self, k: int, max_resource: int) -> int:
        return self.rungs[k + 1].level if k + 1 < len(self.rungs) else max_resource

    def highest_filled(self) -> int:
        """Index of the highest rung that holds any record, or -1."""
        for k in range(len(self.rungs) - 1, -1, -1):
            if len(self.rungs[k]):
                return k
        return -1


class AsynchronousHyperband(Scheduler):
    """ASHA with one bracket; asynchronous Hyperband with several."""

    def __init__(
        self,
        mode: Mode,
        min_resource: int,
        max_resource: int,
        reduction_factor: float = 3,
        type: Literal["promotion", "stopping"] = "promotion",
        brackets: int = 1,
        promote_in_place: bool = True,
        max_trials: Optional[int] = None,
        seed: int = 0,
    ):
        super().__init__(mode, max_resource, max_trials)
        self.eta = reduction_factor
        self.type = type
        self.promote_in_place = promote_in_place
        self.seed = seed
        self.brackets: list[_Bracket] = []
        for s in range(brackets):
            start = int(round(min_resource * reduction_factor**s))
            if start >= max_resource and s > 0:
                break  # a bracket with no rung would be plain FIFO
            self.brackets.append(_Bracket(rung_levels(start, max_resource, reduction_factor)))
        self._bracket_probs = self._hyperband_probabilities()
        # Per bracket: how many running or completed trials hold each granted
        # resource; the end game asks "does anyone lead past level r?" in O(rungs).
        self._leaders: list[Counter] = [Counter() for _ in self.brackets]

    # ---- new trials ----------------------------------------------------------
    def _hyperband_probabilities(self) -> np.ndarray:
        # Synchronous Hyperband gives bracket s about eta**(K-s) / (K-s+1) trials,
        # K the number of rungs of bracket 0 (Li et al., JMLR 2018).
        k = len(self.brackets[0].rungs)
        weights = np.array([self.eta ** (k - s) / (k - s + 1) for s in range(len(self.brackets))])
        return weights / weights.sum()

    def _draw_bracket(self, trial_id: int) -> int:
        if len(self.brackets) == 1:
            return 0
        u = np.random.default_rng([self.seed, trial_id, 0x4B]).random()
        return int(min(np.searchsorted(np.cumsum(self._bracket_probs), u, side="right"), len(self.brackets) - 1))

    def _first_until(self, bracket: int) -> int:
        b = self.brackets[bracket]
        if self.type == "stopping" or not b.rungs:
            return self.max_resource
        return b.level(0)

    # ---- the contract --------------------------------------------------------
    def next_job(self) -> Optional[Job]:
        if self.type == "promotion":
            job = self._pick_promotion()
            if job is not None:
                self._grant(job)
                return job
        if self.may_start_new():
            bracket = self._draw_bracket(self._next_id)
            return self._new_trial(self._first_until(bracket), bracket)
        return None

    def _decide(self, trial: TrialRecord, resource: int, value: float) -> Decision:
        bracket = self.brackets[trial.bracket]
        k = bracket.index_of.get(resource)
        if resource >= self.max_resource:
            return Decision.CONTINUE  # complete: the trainer ends by itself
        if k is None:
            return Decision.CONTINUE  # between rungs
        if self.type == "stopping":
            return Decision.CONTINUE if bracket.rungs[k].continues(trial.trial_id, self.eta) else Decision.STOP
        if resource < trial.until:
            return Decision.CONTINUE  # already promoted past this rung (restored run)
        if self.promote_in_place:
            job = self._pick_promotion()
            if job is not None and job.trial_id == trial.trial_id:
                self._grant(job)
                return Decision.CONTINUE
        return Decision.PAUSE

    # ---- promotion -----------------------------------------------------------
    def _pick_promotion(self) -> Optional[Job]:
        """The promotion ``next_job`` would make now, without making it."""
        best: Optional[tuple[int, int, int]] = None  # (level, bracket, trial)
        for s, bracket in enumerate(self.brackets):
            for k in range(len(bracket.rungs) - 1, -1, -1):
                tid = bracket.rungs[k].promotable(self.eta)
                if tid is not None:
                    if best is None or bracket.level(k) > best[0]:
                        best = (bracket.level(k), s, tid)
                    break  # highest rung first within a bracket
        if best is None and not self.may_start_new():
            best = self._end_game_promotion()
        if best is None:
            return None
        level, s, tid = best
        k = self.brackets[s].index_of[level]
        return Job.resume(tid, self.brackets[s].next_level(k, self.max_resource), s)

    def _end_game_promotion(self) -> Optional[tuple[int, int, int]]:
        """No new trial may start: promote the best paused trial of a bracket's highest filled rung.

        Without this, rungs with fewer than eta records never promote and the
        experiment ends with no trial trained to ``max_resource`` while workers
        sit idle. Only the highest filled rung is eligible, which bounds the
        extra training to the trials that got furthest.
        """
        best = None
        for s, bracket in enumerate(self.brackets):
            k = bracket.highest_filled()
            if k < 0 or self._any_beyond(s, bracket.level(k)):
                continue
            tid = bracket.rungs[k].best_candidate()
            if tid is not None and (best is None or bracket.level(k) > best[0]):
                best = (bracket.level(k), s, tid)
        return best

    def _any_beyond(self, bracket: int, level: int) -> bool:
        """A trial of the bracket trained, or is training, past ``level``: it leads already."""
        return any(until > level and n > 0 for until, n in self._leaders[bracket].items())

    def _grant(self, job: Job) -> None:
        trial = self.trials[job.trial_id]
        bracket = self.brackets[trial.bracket]
        k = bracket.index_of[trial.until]
        bracket.rungs[k].drop_candidate(trial.trial_id)
        self._set(trial, status="running", until=job.until)

    def _on_change(self, trial: TrialRecord, old_status, old_until) -> None:
        leaders = self._leaders[trial.bracket]
        if old_status in ("running", "completed"):
            leaders[old_until] -= 1
        if trial.status in ("running", "completed"):
            leaders[trial.until] += 1

    # ---- hooks ---------------------------------------------------------------
    def _record(self, trial: TrialRecord, resource: int, value: float) -> None:
        bracket = self.brackets[trial.bracket]
        k = bracket.index_of.get(resource)
        if k is None:
            return
        # A paused, not-yet-promoted trial at this rung is a promotion candidate.
        candidate = self.type == "promotion" and resource >= trial.until
        bracket.rungs[k].add(trial.trial_id, self.key(value), candidate)

    def _forget_candidate(self, trial: TrialRecord) -> None:
        bracket = self.brackets[trial.bracket]
        k = bracket.index_of.get(trial.until)
        if k is not None:
            bracket.rungs[k].drop_candidate(trial.trial_id)


def ASHA(mode: Mode, min_resource: int, max_resource: int, reduction_factor: float = 3,
         type: Literal["promotion", "stopping"] = "promotion", promote_in_place: bool = True,
         max_trials: Optional[int] = None) -> AsynchronousHyperband:
    """Asynchronous successive halving: asynchronous Hyperband with one bracket."""
    return AsynchronousHyperband(mode, min_resource, max_resource, reduction_factor, type, 1,
                                 promote_in_place, max_trials)
