"""ASHA's promotion type as the paper writes it: a reference for tests, independent of hpo_operator.

Li et al., "A System for Massively Parallel Hyperparameter Tuning", MLSys 2020,
Algorithm 2 (with the minimum early-stopping rate s = 0):

    get_job():
        for k = top rung - 1, ..., 1, 0:
            candidates = top_k(rung k, |rung k| / eta)   (here: those at or below the 1/eta quantile)
            promotable = {t in candidates : t not already promoted}
            if promotable is not empty: return promotable[0], k + 1
        draw a new configuration; return it, 0
    a job (t, k) that finishes with loss l: record t in rung k with l

Deliberately naive (a dict per rung, a full sort per call) so that it shares
nothing with the project's scheduler but the paper. Rung k trains to
``min_resource * eta**k``; the rung above the last one below ``max_resource``
is ``max_resource`` itself (a trial there is complete, never promoted).

Two choices the paper leaves open, taken as the project documents them in
docs/architecture.md: equal losses rank the lower trial id first, and a
diverged loss (NaN or infinite) ranks worst and is never promoted. One the
project makes differently (docs/schedulers.md): ``top_k`` takes the losses at
or below their 1/eta quantile, interpolated as ``numpy.quantile`` does (Syne
Tune's pivot), not ``|rung k| / eta`` rounded down.
"""

from __future__ import annotations

import math

import numpy as np


class PaperASHA:
    def __init__(self, min_resource: int, max_resource: int, eta: int, mode: str = "min"):
        self.levels = []
        level = min_resource
        while level < max_resource:
            self.levels.append(level)
            level *= eta
        self.max_resource = max_resource
        self.eta = eta
        self.sign = 1 if mode == "min" else -1
        self.rungs: list[dict[int, float]] = [{} for _ in self.levels]  # rung k: trial -> loss
        self.promoted: list[set[int]] = [set() for _ in self.levels]
        self.trials = 0

    def resource(self, k: int) -> int:
        """What a job for rung k trains to."""
        return self.levels[k] if k < len(self.levels) else self.max_resource

    def _loss(self, value: float) -> float:
        return self.sign * value if math.isfinite(value) else math.inf

    def get_job(self) -> tuple[str, int, int]:
        """("resume", trial, resource) for a promotion, else ("new", trial, resource of rung 0)."""
        for k in reversed(range(len(self.levels))):
            rung = self.rungs[k]
            ranked = sorted(rung, key=lambda t: (self._loss(rung[t]), t))
            top = ranked[:self._top_k_size(len(rung), self.eta)]
            promotable = [t for t in top if t not in self.promoted[k] and math.isfinite(rung[t])]
            if promotable:
                self.promoted[k].add(promotable[0])
                return "resume", promotable[0], self.resource(k + 1)
        self.trials += 1
        return "new", self.trials - 1, self.resource(0)

    @staticmethod
    def _top_k_size(n: int, eta: int) -> int:
        if n < 2:
            return 0  # one loss has no quantile to rank against
        # Positions 0..n-1 stand for the sorted losses: those at or below the quantile's position.
        return int(np.sum(np.arange(n) <= np.quantile(np.arange(n), 1 / eta)))

    def job_done(self, trial: int, resource: int, value: float) -> None:
        """A job that trained ``trial`` to ``resource`` returned ``value``."""
        if resource < self.max_resource:
            self.rungs[self.levels.index(resource)][trial] = value
