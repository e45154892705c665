"""Compare schedulers with random search on the same table, workers and configuration draws."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Optional, Sequence

from hpo_operator.scheduling.factory import scheduler_spec_for
from hpo_operator.sim.simulator import SimulationResult, simulate
from hpo_operator.sim.table import LearningCurveTable
from hpo_operator.spec.experiment import SchedulerSpec

RANDOM = "random"  # FIFO over random draws: every trial trained to the end


@dataclass(frozen=True)
class SchedulerSummary:
    name: str
    top1_median_s: Optional[float]
    top5_median_s: Optional[float]
    speedup_top1: Optional[float]
    speedup_top5: Optional[float]
    unreached_top1: int  # seeds that never reached the target within the budget
    unreached_top5: int
    runs: list[SimulationResult]


def _median(times: list[Optional[float]]) -> Optional[float]:
    # A seed that never reached the target counts as infinitely slow.
    med = statistics.median([t if t is not None else float("inf") for t in times])
    return None if med == float("inf") else med


def compare(table: LearningCurveTable, schedulers: Sequence[str], *, workers: int, seeds: int,
            epoch_scale: float, overhead: float, min_resource: int = 1, max_resource: Optional[int] = None,
            reduction_factor: float = 3, brackets: int = 3, max_trials: int = 1000,
            max_time: Optional[float] = None) -> dict[str, SchedulerSummary]:
    base = SchedulerSpec(min_resource=min_resource, max_resource=max_resource or table.max_resource,
                         reduction_factor=reduction_factor, brackets=brackets)
    names = [RANDOM] + [s for s in schedulers if s != RANDOM]
    runs: dict[str, list[SimulationResult]] = {n: [] for n in names}
    for seed in range(seeds):
        for name in names:
            spec = scheduler_spec_for("fifo" if name == RANDOM else name, base)
            runs[name].append(simulate(table, spec, name=name, workers=workers, seed=seed, epoch_scale=epoch_scale,
                                       overhead=overhead, max_trials=max_trials, max_time=max_time))
    ref1 = _median([r.time_to_target[0.01] for r in runs[RANDOM]])
    ref5 = _median([r.time_to_target[0.05] for r in runs[RANDOM]])
    out = {}
    for name in names:
        t1 = _median([r.time_to_target[0.01] for r in runs[name]])
        t5 = _median([r.time_to_target[0.05] for r in runs[name]])
        out[name] = SchedulerSummary(
            name, t1, t5,
            None if t1 is None or ref1 is None else ref1 / t1,
            None if t5 is None or ref5 is None else ref5 / t5,
            sum(r.time_to_target[0.01] is None for r in runs[name]),
            sum(r.time_to_target[0.05] is None for r in runs[name]),
            runs[name],
        )
    return out
