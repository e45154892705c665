"""One rung of successive halving, with O(log n) insert, rank and best-candidate queries."""

from __future__ import annotations

import math
from typing import Optional

from sortedcontainers import SortedList

Entry = tuple[float, int]  # (rank key: smaller is better, trial id: earlier wins ties)


def top_count(n: int, eta: float) -> int:
    """How many of ``n`` records rank inside the top 1/eta: those at or better than the 1/eta quantile of
    the values, interpolated between neighbours as ``numpy.quantile`` does (Syne Tune's pivot), which is
    ``floor((n - 1) / eta) + 1``. ASHA's paper counts ``floor(n / eta)``: one fewer at most sizes, and
    none below eta records, so the sparse upper rungs held their best trial back until eta records
    arrived (docs/schedulers.md has the figures of both)."""
    return int((n - 1) // eta) + 1 if n > 0 else 0


class Rung:
    """Results recorded at one resource level.

    ``records`` holds every trial that reached the level; ``candidates`` those
    paused here and not yet promoted. Promotion rule (ASHA, Algorithm 2): the
    best candidate is promotable when it ranks inside the top 1/eta of all
    records, counted as :func:`top_count`. The best candidate ranks highest of
    all candidates, so if it is not inside, none is.
    """

    __slots__ = ("level", "records", "candidates", "_entry")

    def __init__(self, level: int):
        self.level = level
        self.records: SortedList = SortedList()
        self.candidates: SortedList = SortedList()
        self._entry: dict[int, Entry] = {}

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, trial_id: int) -> bool:
        return trial_id in self._entry

    def add(self, trial_id: int, key: float, candidate: bool) -> None:
        entry = (key, trial_id)
        self._entry[trial_id] = entry
        self.records.add(entry)
        if candidate:
            self.candidates.add(entry)

    def make_candidate(self, trial_id: int) -> None:
        """A trial already recorded here pauses here after all."""
        self.candidates.add(self._entry[trial_id])

    def drop_candidate(self, trial_id: int) -> None:
        entry = self._entry.get(trial_id)
        if entry is not None and entry in self.candidates:
            self.candidates.remove(entry)

    def best_candidate(self) -> Optional[int]:
        """Best paused trial with a finite value, or None."""
        if not self.candidates or self.candidates[0][0] == math.inf:
            return None
        return self.candidates[0][1]

    def promotable(self, eta: float) -> Optional[int]:
        """The candidate ASHA would promote from this rung now, or None."""
        if not self.candidates:
            return None
        best = self.candidates[0]
        if best[0] == math.inf:
            return None  # diverged (NaN/inf) trials never earn more resource
        if len(self.records) < 2:
            return None  # a rung of one record ranks nothing
        return best[1] if self.records.bisect_left(best) < top_count(len(self.records), eta) else None

    def continues(self, trial_id: int, eta: float) -> bool:
        """Stopping rule: the trial ranks inside the top ``max(1, floor(n / eta))`` of this rung.

        Ties with the cutoff value continue (the trial's own record counts), as in Optuna's
        SuccessiveHalvingPruner, which tests/simulation/test_reference_schedulers.py holds it to."""
        key = self._entry[trial_id][0]
        if key == math.inf:
            return False  # NaN/inf: diverged, stop (as Optuna's pruner does)
        cutoff_index = max(1, int(len(self.records) // eta)) - 1
        return key <= self.records[cutoff_index][0]

    def ranks_within(self, trial_id: int, share: float) -> bool:
        """The trial ranks inside the best ``max(1, ceil(n * share))`` of this rung's ``n`` records
        (earlier trials win ties); a diverged (NaN/inf) trial never does."""
        entry = self._entry[trial_id]
        if entry[0] == math.inf:
            return False
        return self.records.bisect_left(entry) < max(1, math.ceil(len(self.records) * share))
