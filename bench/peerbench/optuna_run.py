"""Optuna's TPE with its HyperbandPruner on a table, on the simulated clock of ``hpo simulate``.

Optuna has no simulator, so this drives ``ask``/``report``/``should_prune``/``tell``
from the same discrete-event loop as the project's simulator: ``workers`` slots,
``overhead`` seconds per run start, the table's epoch seconds times
``epoch_scale``. Pruning stops a trial for good (Optuna does not pause).
TPE proposes a point of the table's space (multivariate, with the constant
liar for the trials still running, as Optuna advises for parallel workers);
:class:`RowSampler` hands the nearest row not yet tried to the trial instead.
"""

from __future__ import annotations

import heapq
import warnings
from typing import Any, Optional

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from hpo_operator.sim import LearningCurveTable
from peerbench.protocol import Protocol, TargetClock
from peerbench.rows import RowPool


def distributions(space: dict[str, dict]) -> dict[str, BaseDistribution]:
    """Optuna distributions of a manifest-format search space."""
    out: dict[str, BaseDistribution] = {}
    for name, d in space.items():
        kind = d["type"]
        if kind in ("uniform", "loguniform"):
            out[name] = FloatDistribution(d["min"], d["max"], log=kind == "loguniform")
        elif kind in ("randint", "lograndint"):
            out[name] = IntDistribution(d["min"], d["max"], log=kind == "lograndint")
        elif kind == "choice":
            out[name] = CategoricalDistribution(d["values"])
        else:
            raise ValueError(f"search_space.{name}: type {kind!r} has no Optuna counterpart here")
    return out


class RowSampler(BaseSampler):
    """Wraps a sampler so every trial gets a whole table row: the inner sampler's joint proposal
    snapped to the nearest allowed row, or a uniformly drawn row while it has no model yet."""

    def __init__(self, inner: BaseSampler, pool: RowPool, space: dict[str, BaseDistribution], seed: int):
        self._inner = inner
        self._pool = pool
        self._space = space
        self._rng = np.random.default_rng(seed)

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return self._space  # known in advance: sample every parameter jointly

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        proposal = self._inner.sample_relative(study, trial, search_space)
        complete = proposal and all(n in proposal for n in self._pool.names)
        row = self._pool.take_nearest(proposal) if complete else self._pool.take_random(self._rng)
        if row is None:
            raise RuntimeError("no table row left to propose")
        return {n: self._pool.configs[row][n] for n in self._pool.names}

    def sample_independent(self, study, trial, param_name, param_distribution) -> Any:
        raise RuntimeError(f"{param_name} should have been sampled jointly with the whole row")

    def before_trial(self, study, trial) -> None:
        self._inner.before_trial(study, trial)

    def after_trial(self, study, trial: FrozenTrial, state: TrialState, values) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


def run_optuna(table: LearningCurveTable, space: dict[str, dict], protocol: Protocol, seed: int,
               max_resource: Optional[int] = None) -> tuple[dict[float, Optional[float]], int]:
    """Time to each target (None: never reached) and the number of trials started."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    max_resource = max_resource or table.max_resource
    pool = RowPool(table.configs, space, repeats=protocol.draws == "with-replacement")
    dists = distributions(space)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        tpe = TPESampler(seed=seed, multivariate=True, constant_liar=True)
    study = optuna.create_study(
        # HyperbandPruner assigns brackets by a hash of the study name: a fixed name repeats a seed's run
        study_name=f"peers-seed-{seed}",
        direction="minimize" if table.mode == "min" else "maximize",
        sampler=RowSampler(tpe, pool, dists, seed),
        pruner=optuna.pruners.HyperbandPruner(min_resource=protocol.min_resource, max_resource=max_resource,
                                              reduction_factor=int(protocol.reduction_factor)),
    )
    clock = TargetClock(table, max_resource)
    events: list[tuple[float, int, int, int]] = []  # (time, sequence, trial number, epoch)
    running: dict[int, tuple[optuna.Trial, int]] = {}
    seq = started = 0
    now = 0.0

    def epoch_time(row: int, epoch: int) -> float:
        return float(table.epoch_seconds[row, epoch - 1]) * protocol.epoch_scale

    def fill() -> None:
        nonlocal seq, started
        while len(running) < protocol.workers and started < protocol.max_trials and pool.remaining > 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                trial = study.ask(dists)
            row = pool.row_of(trial.params)
            running[trial.number] = (trial, row)
            started += 1
            heapq.heappush(events, (now + protocol.overhead + epoch_time(row, 1), seq, trial.number, 1))
            seq += 1

    fill()
    while events:
        now, _, number, epoch = heapq.heappop(events)
        trial, row = running[number]
        value = float(table.curves[row, epoch - 1])
        trial.report(value, epoch)
        clock.observe(now, epoch, value)
        if epoch >= max_resource:
            study.tell(trial, value)
        elif trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
        else:
            heapq.heappush(events, (now + epoch_time(row, epoch + 1), seq, number, epoch + 1))
            seq += 1
            continue
        del running[number]
        if clock.done:
            break
        fill()
    return clock.reached, started
