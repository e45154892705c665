"""Syne Tune 0.13's BOHB, MOBSTER, HyperTune and ASHA (random rows) on a table, in its own simulator backend.

Each runs on ``HyperbandScheduler`` (promotion type: pause and resume, as the
project's ASHA) over a ``BlackboxTabular`` built from the table, driven by
``UserBlackboxBackend`` with ``SimulatorCallback``. The protocol matches ``hpo
simulate``: ``workers`` trials at once, every run start (new or resumed) costs
``overhead`` simulated seconds (the simulator's ``delay_start``), epochs take
the table's seconds times ``epoch_scale``. Two departures from Syne Tune's
defaults, both to match the project's simulator: the clock does not count the
searchers' own compute time (Syne Tune adds the real time spent outside the
backend, which on a shared machine measures the neighbours), and no default
configuration is tried first. Decisions happen on a tick of ``tick`` simulated
seconds while every worker is busy.

The GP searchers and the random one pick among the table's rows (``restrict_configurations``);
the KDE searcher ignores that option in 0.13, so :class:`RowRestrictedKDE`
snaps its proposals to the nearest row not yet tried (peerbench.rows).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from typing import Optional

import numpy as np
import pandas as pd
from syne_tune import Tuner
from syne_tune import config_space as cs
from syne_tune.backend.simulator_backend.simulator_backend import SimulatorConfig
from syne_tune.backend.simulator_backend.simulator_callback import SimulatorCallback
from syne_tune.blackbox_repository.blackbox_tabular import BlackboxTabular
from syne_tune.blackbox_repository.simulated_tabular_backend import UserBlackboxBackend
from syne_tune.constants import ST_TUNER_TIME
from syne_tune.optimizer.schedulers import HyperbandScheduler
from syne_tune.optimizer.schedulers.searchers.kde import MultiFidelityKernelDensityEstimator
from syne_tune.tuner_callback import TunerCallback

from hpo_operator.sim import LearningCurveTable
from peerbench.protocol import Protocol, TargetClock
from peerbench.rows import RowPool

METRIC = "objective"
ELAPSED = "elapsed_time"
RESOURCE = "epoch"
SEARCHERS = {"bohb": "kde", "mobster": "bayesopt", "hypertune": "hypertune", "asha": "random"}


def config_space(space: dict[str, dict]) -> dict:
    """Syne Tune domains of a manifest-format search space."""
    out = {}
    for name, d in space.items():
        kind = d["type"]
        if kind == "uniform":
            out[name] = cs.uniform(d["min"], d["max"])
        elif kind == "loguniform":
            out[name] = cs.loguniform(d["min"], d["max"])
        elif kind == "randint":
            out[name] = cs.randint(d["min"], d["max"])
        elif kind == "lograndint":
            out[name] = cs.lograndint(d["min"], d["max"])
        elif kind == "choice":
            out[name] = cs.choice(d["values"])
        else:
            raise ValueError(f"search_space.{name}: type {kind!r} has no Syne Tune counterpart here")
    return out


def blackbox(table: LearningCurveTable, space: dict[str, dict], epoch_scale: float) -> BlackboxTabular:
    """The table as a tabulated blackbox: objective and cumulative scaled seconds per epoch, one seed."""
    hyperparameters = pd.DataFrame([{n: c[n] for n in space} for c in table.configs])
    elapsed = np.cumsum(table.epoch_seconds, axis=1) * epoch_scale
    evaluations = np.stack([table.curves, elapsed], axis=-1)[:, None, :, :]  # (rows, seeds, epochs, objectives)
    return BlackboxTabular(
        hyperparameters=hyperparameters,
        configuration_space=config_space(space),
        fidelity_space={RESOURCE: cs.randint(1, table.max_resource)},
        objectives_evaluations=evaluations,
        objectives_names=[METRIC, ELAPSED],
    )


class SimulatedClockBackend(UserBlackboxBackend):
    """Counts only simulated time: the searchers' real compute time is not added to the clock."""

    def _advance_by_outside_time(self):
        pass


class SimulatedTuner(Tuner):
    """Never sleeps for real: with ``sleep_time=0`` Syne Tune still calls ``time.sleep(0)`` on every
    tick, which on a loaded machine yields the CPU for milliseconds, tens of thousands of times per
    experiment. The callbacks still advance the simulated clock by a tick."""

    def _sleep(self):
        for callback in self.callbacks:
            callback.on_tuning_sleep(self.sleep_time)


class RowRestrictedKDE(MultiFidelityKernelDensityEstimator):
    """BOHB's KDE searcher held to the table's rows: random draws are uniform over the allowed rows,
    model proposals are snapped to the nearest allowed row."""

    def __init__(self, *args, pool: RowPool, **kwargs):
        super().__init__(*args, **kwargs)
        self._pool = pool
        self._rng = np.random.default_rng(kwargs.get("random_seed", 0))

    def _get_random_config(self, exclusion_list=None):
        row = self._pool.take_random(self._rng)
        return None if row is None else dict(self._pool.configs[row])

    def _get_config(self, **kwargs):
        config = super()._get_config(**kwargs)
        if config is None:
            return None
        row = self._pool.row_of(config)  # a random draw: already taken from the pool
        if row is None:
            row = self._pool.take_nearest(config)
        return None if row is None else {n: self._pool.configs[row][n] for n in self._pool.names}


class _Recorder(TunerCallback):
    """Feeds every result to the target clock and counts the distinct rows started."""

    def __init__(self, clock: TargetClock, pool: RowPool):
        self.clock = clock
        self.pool = pool
        self.rows_started: set[int] = set()

    def on_trial_result(self, trial, status, result, decision):
        self.clock.observe(float(result[ST_TUNER_TIME]), int(result[RESOURCE]), float(result[METRIC]))

    def on_start_trial(self, trial):
        self.rows_started.add(self.pool.row_of(trial.config))


def _stop_when_rows_run_out(searcher, recorder: _Recorder, n_rows: int) -> None:
    """Syne Tune 0.13's GP searchers raise once every row of ``restrict_configurations`` has been
    suggested; return no configuration instead, which ends the experiment as an exhausted space."""
    inner = searcher.get_config

    def get_config(**kwargs):
        return None if len(recorder.rows_started) >= n_rows else inner(**kwargs)

    searcher.get_config = get_config


def run_synetune(table: LearningCurveTable, space: dict[str, dict], method: str, protocol: Protocol, seed: int,
                 tick: float = 1.0) -> tuple[dict[float, Optional[float]], int]:
    """Time to each target (None: never reached) and the number of trials started."""
    logging.getLogger("syne_tune").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")  # pandas and statsmodels notices from inside Syne Tune, on every call
    repeats = protocol.draws == "with-replacement"
    pool = RowPool(table.configs, space, repeats=repeats)
    cspace = config_space(space)
    mode = table.mode
    common = dict(metric=METRIC, mode=mode, resource_attr=RESOURCE, max_t=table.max_resource,
                  grace_period=protocol.min_resource, reduction_factor=protocol.reduction_factor,
                  type="promotion", points_to_evaluate=[], random_seed=seed)
    if method == "bohb":
        searcher = RowRestrictedKDE(cspace, metric=METRIC, mode=mode, points_to_evaluate=[],
                                    allow_duplicates=repeats, resource_attr=RESOURCE, random_seed=seed,
                                    debug_log=False, pool=pool)
        scheduler = HyperbandScheduler(cspace, searcher=searcher, **common)
    elif method in SEARCHERS:
        options = {"restrict_configurations": [{n: c[n] for n in space} for c in table.configs],
                   "allow_duplicates": repeats, "debug_log": False}
        if method == "hypertune":
            options["model"] = "gp_independent"
        scheduler = HyperbandScheduler(cspace, searcher=SEARCHERS[method], search_options=options, **common)
    else:
        raise ValueError(f"unknown Syne Tune method {method!r}; choose from {', '.join(SEARCHERS)}")
    clock = TargetClock(table)
    recorder = _Recorder(clock, pool)
    if not repeats:
        _stop_when_rows_run_out(scheduler.searcher, recorder, table.n_rows)
    backend = SimulatedClockBackend(
        blackbox=blackbox(table, space, protocol.epoch_scale), elapsed_time_attr=ELAPSED, seed=0,
        simulator_config=SimulatorConfig(delay_on_trial_result=0, delay_complete_after_final_report=0,
                                         delay_complete_after_stop=0, delay_start=protocol.overhead,
                                         delay_stop=0),
        tuner_sleep_time=tick,
    )
    with tempfile.TemporaryDirectory() as folder:
        os.environ["SYNETUNE_FOLDER"] = folder  # results Syne Tune writes go away with the run
        tuner = SimulatedTuner(
            trial_backend=backend, scheduler=scheduler, n_workers=protocol.workers, sleep_time=0,
            stop_criterion=lambda status: clock.done or status.num_trials_started >= protocol.max_trials,
            callbacks=[SimulatorCallback(), recorder], save_tuner=False, print_update_interval=1e9,
            results_update_interval=1e9, tuner_name=f"peers-{method}-{seed}",
        )
        with contextlib.redirect_stdout(io.StringIO()):  # Syne Tune prints its status and best trial
            tuner.run()
    return clock.reached, len(recorder.rows_started) if not repeats else tuner.tuning_status.num_trials_started
