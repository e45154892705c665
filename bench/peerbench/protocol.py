"""The protocol every method runs under, as ``hpo simulate`` runs it, and the clock of its targets."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hpo_operator.sim import LearningCurveTable

TARGETS = (0.01, 0.05)


@dataclass(frozen=True)
class Protocol:
    workers: int = 8
    overhead: float = 10.0  # simulated seconds per run start (pod start + checkpoint load)
    epoch_scale: float = 1000.0  # the table's epoch seconds times this
    max_trials: int = 1000
    min_resource: int = 1
    reduction_factor: float = 3.0
    draws: str = "without-repeats"


def load_space(path: str | Path) -> dict[str, dict]:
    """The table's ``search_space`` (manifest format); peers need it to propose points."""
    doc = json.loads(Path(path).read_text())
    if "search_space" not in doc:
        raise ValueError(f"{path}: no search_space; the peers bench needs the space the rows were drawn from "
                         "(bench/tables/README.md)")
    return doc["search_space"]


class TargetClock:
    """When a fully trained trial first entered each top fraction of the table's final values."""

    def __init__(self, table: LearningCurveTable, max_resource: Optional[int] = None):
        self.max_resource = max_resource or table.max_resource
        self.thresholds = {q: table.top_threshold(q) for q in TARGETS}
        self.reached: dict[float, Optional[float]] = {q: None for q in TARGETS}
        self._better = (lambda a, b: a <= b) if table.mode == "min" else (lambda a, b: a >= b)

    def observe(self, time: float, epoch: int, value: float) -> None:
        if epoch < self.max_resource or not math.isfinite(value):
            return
        for q, threshold in self.thresholds.items():
            if self.reached[q] is None and self._better(value, threshold):
                self.reached[q] = time

    @property
    def done(self) -> bool:
        return all(t is not None for t in self.reached.values())
