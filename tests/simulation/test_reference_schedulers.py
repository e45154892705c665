"""Cross-check against an independent implementation: Optuna's SuccessiveHalvingPruner.

Optuna's pruner is stopping-type ASHA. Both are driven with the identical
stream of results (real learning curves from the digits table, trials
interleaved at random) and must make the same stop/continue decision at every
step. Intended differences, none of which this stream exercises:

* Optuna infers ``min_resource`` from finished trials when it is "auto"; here it
  is given explicitly.
* Optuna has no maximum resource: when ``max_resource`` is itself a rung
  level (27 = 3**3) it may "prune" a trial at its final epoch; here the trial
  is complete and the decision is not compared.
* Optuna's ``bootstrap_count`` (default 0) delays pruning; ours has no such
  knob (equivalent to 0).
* Syne Tune 0.13's promotion type promotes once a rung holds 2 entries
  where the paper (and this project) waits for ``eta``; Ray's cutoff excludes
  the new value while Optuna's and ours include it. Documented in
  docs/schedulers.md.
"""

from __future__ import annotations

import numpy as np
import pytest

import optuna  # a test dependency: the independent check must fail, never skip, without it

from hpo_operator.scheduling import ASHA, Decision  # noqa: E402


@pytest.mark.parametrize("seed, eta, min_resource", [(0, 3, 1), (1, 3, 2), (2, 2, 1), (3, 4, 1)])
def test_stop_decisions_equal_optunas_successive_halving(digits_table, seed, eta, min_resource):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    max_resource = 27
    n_trials, workers = 60, 5
    rng = np.random.default_rng(seed)
    rows = rng.integers(digits_table.n_rows, size=n_trials)
    # Some rows diverge (NaN) to exercise the "NaN ranks worst / stops" rule on both sides.
    curves = digits_table.curves[rows, :max_resource].copy()
    curves[rng.random(n_trials) < 0.05, 2:] = np.nan

    ours = ASHA("min", min_resource, max_resource, eta, type="stopping", max_trials=n_trials)
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.SuccessiveHalvingPruner(
        min_resource=min_resource, reduction_factor=eta, min_early_stopping_rate=0, bootstrap_count=0))

    running: dict[int, tuple[object, int]] = {}  # our trial id -> (optuna trial, last epoch)

    def launch():
        job = ours.next_job()
        if job is not None:
            running[job.trial_id] = (study.ask(), 0)

    for _ in range(workers):
        launch()
    decisions = 0
    stops = 0
    while running:
        tid = sorted(running)[int(rng.integers(len(running)))]
        otrial, epoch = running[tid]
        epoch += 1
        value = float(curves[tid, epoch - 1])
        mine = ours.on_result(tid, epoch, value)
        otrial.report(value, epoch)
        theirs = otrial.should_prune()
        if epoch < max_resource:  # Optuna knows no max: it would "prune" a finished trial at a rung == max
            assert (mine is Decision.STOP) == theirs, f"trial {tid} epoch {epoch} value {value}: {mine} vs prune={theirs}"
        decisions += 1
        if mine is Decision.STOP:
            stops += 1
            study.tell(otrial, state=optuna.trial.TrialState.PRUNED)
        elif epoch == max_resource:
            ours.on_trial_end(tid, "completed")
            study.tell(otrial, value)
        else:
            running[tid] = (otrial, epoch)
            continue
        del running[tid]
        launch()
    assert decisions > 150 and stops > n_trials // 2  # the stream really exercises stopping
