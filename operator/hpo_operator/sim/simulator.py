"""Discrete-event simulation of an experiment on a learning-curve table.

The same :class:`~hpo_operator.engine.ExperimentEngine` (and so the same
scheduler code) as the operator drives ``workers`` simulated slots. Time is
simulated: an epoch takes the table's wall time times ``epoch_scale``, and
every run start (pod start plus checkpoint load) costs ``overhead`` seconds.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Optional

from hpo_operator.engine import ExperimentEngine, Launch
from hpo_operator.scheduling import Decision, fidelity_levels, make_scheduler
from hpo_operator.search import MODEL_SEARCHERS, Searcher, TableRowSearcher, make_searcher
from hpo_operator.search.features import TableCandidates
from hpo_operator.sim.table import LearningCurveTable
from hpo_operator.spec.experiment import Budget, HPOExperimentSpec, Objective, SchedulerSpec, SearcherSpec

# The simulator never builds pods; the engine still wants a complete spec.
_SIM_TEMPLATE = {"spec": {"containers": [{"name": "simulated", "image": "none"}]}}


def simulation_spec(table: LearningCurveTable, scheduler: SchedulerSpec, workers: int, seed: int,
                    max_trials: int) -> HPOExperimentSpec:
    return HPOExperimentSpec(
        objective=Objective(metric=table.metric, mode=table.mode),
        search_space={"row": {"type": "randint", "min": 0, "max": table.n_rows - 1}},
        searcher=SearcherSpec(algorithm="random", seed=seed),
        scheduler=scheduler,
        budget=Budget(max_trials=max_trials, parallelism=workers, max_failed_trials=max_trials),
        trial_template=_SIM_TEMPLATE,
    )


@dataclass
class SimulationResult:
    scheduler: str
    seed: int
    time_to_target: dict[float, Optional[float]]  # fraction -> simulated seconds (None: never reached)
    trials: int
    epochs: int
    run_starts: int
    end_time: float
    decisions: list[tuple[int, int, str]] = field(default_factory=list)  # (trial, epoch, decision)
    final: dict[int, tuple[int, str, int]] = field(default_factory=dict)  # trial -> (row, phase, last epoch)
    incumbent: list[tuple[float, float]] = field(default_factory=list)  # (time, value): each new best full trial


def table_searcher(table: LearningCurveTable, searcher_spec: Optional[SearcherSpec], scheduler_spec: SchedulerSpec,
                   seed: int, repeats: bool) -> Optional[Searcher]:
    """The searcher of one simulated run; None for the engine's own (random draws with replacement).

    A model-based searcher scores the table's unused rows with its model; random search without
    repeats draws the rows of a seeded permutation, the same order the model's random share uses."""
    if searcher_spec is not None and searcher_spec.algorithm in MODEL_SEARCHERS:
        if repeats:
            raise ValueError("model-based searchers pick table rows without repeats; compare them with "
                             "draws='without-repeats'")
        return make_searcher(searcher_spec.model_copy(update={"seed": seed}), {},
                             levels=fidelity_levels(scheduler_spec), mode=table.mode,
                             candidates=TableCandidates(table.configs, table.space),
                             scheduler=scheduler_spec)
    if repeats:
        # The same random searcher a manifest with searchSpace {row: randint 0..N-1} gets, so an
        # operator or `hpo run` experiment over the table makes the very same draws.
        return None
    return TableRowSearcher(table.n_rows, seed=seed, repeats=False)


def simulate(table: LearningCurveTable, scheduler_spec: SchedulerSpec, *, name: str = "", workers: int = 4,
             seed: int = 0, epoch_scale: float = 1.0, overhead: float = 0.0, max_trials: int = 1000,
             max_time: Optional[float] = None, targets: tuple[float, ...] = (0.01, 0.05),
             stop_at_targets: bool = True, record_decisions: bool = False,
             searcher_spec: Optional[SearcherSpec] = None, repeats: bool = True) -> SimulationResult:
    """Run one simulated experiment and time when a fully trained trial enters each top fraction.

    ``repeats``: random draws may pick a row again (the table stands for an unbounded space);
    without, every row is tried at most once (required for model-based searchers). A searcher
    is told a result only when it happens on the simulated clock, and fits synchronously, so a
    seed gives the same run every time."""
    if scheduler_spec.max_resource > table.max_resource:
        raise ValueError(f"maxResource {scheduler_spec.max_resource} exceeds the table's {table.max_resource} epochs")
    spec = simulation_spec(table, scheduler_spec, workers, seed, max_trials)
    scheduler = make_scheduler(scheduler_spec, table.mode, max_trials, seed=seed)
    searcher = table_searcher(table, searcher_spec, scheduler_spec, seed, repeats)
    engine = ExperimentEngine("sim", spec, searcher=searcher, scheduler=scheduler)
    thresholds = {q: table.top_threshold(q) for q in targets}
    reached: dict[float, Optional[float]] = {q: None for q in targets}
    better = (lambda a, b: a <= b) if table.mode == "min" else (lambda a, b: a >= b)

    events: list[tuple[float, int, int, int]] = []  # (time, sequence, trial, epoch)
    seq = 0
    now = 0.0
    free = workers
    epochs = run_starts = 0
    decisions: list[tuple[int, int, str]] = []
    incumbent: list[tuple[float, float]] = []
    # As the operator times epochs: only those after a run's first (which also holds the start overhead).
    run_first_epoch: dict[int, int] = {}

    def epoch_time(row: int, epoch: int) -> float:
        return float(table.epoch_seconds[row, epoch - 1]) * epoch_scale

    def start(launch: Launch, at: float) -> None:
        nonlocal seq, run_starts
        run_starts += 1
        row = launch.trial.config["row"]
        first = launch.start_epoch + 1
        run_first_epoch[launch.trial.trial_id] = first
        heapq.heappush(events, (at + overhead + epoch_time(row, first), seq, launch.trial.trial_id, first))
        seq += 1

    def fill(at: float) -> None:
        nonlocal free
        while free > 0:
            launch = engine.next_launch()
            if launch is None:
                return
            free -= 1
            start(launch, at)

    fill(now)
    while events:
        now, _, tid, epoch = heapq.heappop(events)
        if max_time is not None and now > max_time:
            now = max_time
            break
        trial = engine.trials[tid]
        row = trial.config["row"]
        value = float(table.curves[row, epoch - 1])
        epochs += 1
        seconds = epoch_time(row, epoch) if epoch > run_first_epoch[tid] else None
        decision = engine.on_observation(tid, epoch, value, seconds)
        if record_decisions:
            decisions.append((tid, epoch, decision.value))
        if epoch >= table.max_resource or epoch >= scheduler_spec.max_resource:
            if math.isfinite(value) and (not incumbent or (value < incumbent[-1][1] if table.mode == "min"
                                                          else value > incumbent[-1][1])):
                incumbent.append((now, value))
            for q, threshold in thresholds.items():
                if reached[q] is None and math.isfinite(value) and better(value, threshold):
                    reached[q] = now
        if decision is Decision.CONTINUE and epoch < trial.until:
            heapq.heappush(events, (now + epoch_time(row, epoch + 1), seq, tid, epoch + 1))
            seq += 1
            continue
        # The run ends here: paused at its rung, stopped, or complete.
        engine.on_run_exit(tid, succeeded=True)
        free += 1
        if stop_at_targets and all(v is not None for v in reached.values()):
            break
        fill(now)
    engine.finish_if_done()
    final = {t.trial_id: (t.config["row"], t.phase, t.last_epoch) for t in engine.trials.values()}
    return SimulationResult(name or scheduler_spec.algorithm, seed, reached, len(engine.trials), epochs,
                            run_starts, now, decisions, final, incumbent)
