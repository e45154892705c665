"""The experiment loop shared by all backends: budgets, retries, failure counts, the best trial."""

from __future__ import annotations

import pytest

from hpo_operator.engine import ExperimentEngine, TrialState
from hpo_operator.scheduling import Decision
from hpo_operator.spec import experiment_from_dict


def engine(manifest, **budget) -> ExperimentEngine:
    manifest["spec"]["budget"] = {"parallelism": 2, **budget}
    manifest["spec"]["scheduler"] = {"algorithm": "fifo", "maxResource": 3}
    return ExperimentEngine("exp", experiment_from_dict(manifest).spec)


def train(e, launch, values):
    for epoch, v in enumerate(values, launch.start_epoch + 1):
        e.on_observation(launch.trial.trial_id, epoch, v)


def test_a_crashed_run_is_retried_from_its_last_epoch_then_counted_failed_once(manifest):
    e = engine(manifest, maxTrials=2, maxRetries=1, maxFailedTrials=5)
    first = e.next_launch()
    assert (first.reason, first.start_epoch, first.until, first.attempt) == ("new", 0, 3, 1)
    train(e, first, [0.9, 0.8])
    e.on_run_exit(0, succeeded=False, message="exit code 3")
    retry = e.next_launch()
    assert (retry.reason, retry.trial.trial_id, retry.start_epoch, retry.attempt) == ("retry", 0, 2, 2)
    # a retried run that re-reports an epoch already recorded is ignored, not double-counted
    assert e.on_observation(0, 2, 0.8) is Decision.CONTINUE
    assert [o[0] for o in e.trials[0].observations] == [1, 2]
    e.on_run_exit(0, succeeded=False, message="exit code 3")
    assert e.trials[0].phase == "Failed" and e.trials[0].failures == 2
    assert e.failed_count == 1
    assert "exit code 3" in e.trials[0].message


def test_too_many_failed_trials_fail_the_experiment_with_a_reason(manifest):
    e = engine(manifest, maxTrials=10, maxRetries=0, maxFailedTrials=1)
    for _ in range(2):
        launch = e.next_launch()
        e.on_run_exit(launch.trial.trial_id, succeeded=False, message="OOMKilled")
    assert e.outcome.phase == "Failed" and e.outcome.reason == "MaxFailedTrialsReached"
    assert "OOMKilled" in e.outcome.message
    assert e.next_launch() is None


def test_exit_0_before_the_target_epoch_is_a_failure(manifest):
    e = engine(manifest, maxTrials=1, maxRetries=0, maxFailedTrials=0)
    launch = e.next_launch()
    train(e, launch, [0.5])
    e.on_run_exit(0, succeeded=True)
    assert e.trials[0].phase == "Failed" and "before epoch 3" in e.trials[0].message


def test_experiment_succeeds_with_the_best_fully_trained_trial(manifest):
    e = engine(manifest, maxTrials=3)
    finals = {}
    while (launch := e.next_launch()) is not None:
        tid = launch.trial.trial_id
        values = [0.9, 0.5, [0.3, 0.1, 0.2][tid]]
        train(e, launch, values)
        e.on_run_exit(tid, succeeded=True)
        finals[tid] = values[-1]
    outcome = e.finish_if_done()
    assert outcome.phase == "Succeeded" and outcome.reason == "BudgetExhausted"
    best = e.best()
    assert best.trial.trial_id == 1 and best.value == 0.1 and best.complete
    assert e.counts()["Completed"] == 3


def test_nan_never_wins(manifest):
    e = engine(manifest, maxTrials=2)
    for values in ([float("nan")] * 3, [0.9, 0.9, 0.9]):
        launch = e.next_launch()
        train(e, launch, values)
        e.on_run_exit(launch.trial.trial_id, succeeded=True)
    assert e.best().trial.trial_id == 1


def test_grid_exhaustion_ends_new_trials(manifest):
    manifest["spec"]["searchSpace"] = {"act": {"type": "choice", "values": ["relu", "tanh"]}}
    manifest["spec"]["searcher"] = {"algorithm": "grid"}
    e = engine(manifest, maxTrials=10)
    launches = [e.next_launch(), e.next_launch()]
    assert {l.trial.config["act"] for l in launches} == {"relu", "tanh"}
    assert e.next_launch() is None


def test_time_up_stops_running_trials_and_ends_the_experiment(manifest):
    e = engine(manifest, maxTrials=5)
    launch = e.next_launch()
    train(e, launch, [0.4])
    stopped = e.time_up()
    assert [t.trial_id for t in stopped] == [0]
    assert e.next_launch() is None
    outcome = e.finish_if_done()
    assert outcome.reason == "MaxDurationReached" and outcome.phase == "Succeeded"


def test_restore_continues_where_the_lost_engine_stopped(manifest):
    manifest["spec"]["budget"] = {"parallelism": 1, "maxTrials": 6}
    manifest["spec"]["scheduler"] = {"algorithm": "asha", "maxResource": 9, "promoteInPlace": False}
    spec = experiment_from_dict(manifest).spec

    def drive(e, steps):
        log = []
        for _ in range(steps):
            launch = e.next_launch()
            if launch is None:
                break
            tid = launch.trial.trial_id
            for epoch in range(launch.start_epoch + 1, launch.until + 1):
                d = e.on_observation(tid, epoch, 1.0 / (tid + 1) + 1.0 / epoch)
                log.append((tid, epoch, d.value))
            e.on_run_exit(tid, succeeded=True)
        return log

    original = ExperimentEngine("exp", spec)
    drive(original, 5)
    saved = [TrialState(t.trial_id, t.name, dict(t.config), t.bracket, t.phase, t.until, list(t.observations),
                        t.attempts, t.failures, t.message) for t in original.trials.values()]
    restored = ExperimentEngine("exp", spec)
    restored.restore(saved)
    assert drive(restored, 50) == drive(original, 50)
    assert restored.best().trial.trial_id == original.best().trial.trial_id


def test_trial_names_are_deterministic(manifest):
    e = engine(manifest, maxTrials=2)
    assert e.next_launch().trial.name == "exp-0000"
    with pytest.raises(KeyError):
        e.on_observation(7, 1, 0.1)


def test_a_run_lost_after_its_last_epoch_is_not_a_failure(manifest):
    e = engine(manifest, maxTrials=1, maxRetries=0, maxFailedTrials=0)
    launch = e.next_launch()
    train(e, launch, [0.5, 0.4, 0.3])
    e.on_run_exit(0, succeeded=False, message="pod deleted")  # e.g. killed while waiting for a decision
    assert e.trials[0].phase == "Completed" and e.trials[0].failures == 0


def test_an_interrupted_run_that_had_finished_is_not_relaunched(manifest):
    e = engine(manifest, maxTrials=1)
    launch = e.next_launch()
    train(e, launch, [0.5, 0.4, 0.3])
    saved = e.trials[0]
    saved.phase = "Pending"  # how a runner restores a run it lost track of
    restored = ExperimentEngine("exp", e.spec)
    restored.restore([saved])
    assert restored.next_launch() is None
    assert restored.trials[0].phase == "Completed"
