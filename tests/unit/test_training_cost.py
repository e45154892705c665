"""Expected improvement per second: epoch times read from every backend's records, learnt per
configuration, and used by the gp to prefer, among equally promising configurations, the faster one,
less so as more trials are trained to the end (cost-cooling)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import TypeAdapter

from hpo_operator.controller.trials import observations_of, read_trial
from hpo_operator.engine import ExperimentEngine
from hpo_operator.search import LearningCurveGPSearcher
from hpo_operator.search.gp import COOLING_TRIALS
from hpo_operator.search.features import TableCandidates
from hpo_operator.search.training_cost import EPOCHS_KEPT, MIN_TRIALS, TrainingCost, epoch_seconds
from hpo_operator.spec.experiment import HPOExperimentSpec
from hpo_operator.spec.search_space import Domain

LEVELS = [1, 3, 9]


def test_an_epoch_is_timed_only_after_an_epoch_of_the_same_run():
    epochs = [1, 2, 3, 4, 5, 7]
    times = [100.0, 102.0, 104.5, 110.0, 111.0, 115.0]
    # Epoch 4 began a second run (attempt 2): its time holds the pod's start. Epoch 7 follows no epoch 6.
    assert epoch_seconds(epochs, times, [1, 1, 1, 2, 2, 2]) == {2: 2.0, 3: 2.5, 5: 1.0}
    # Without runs on record (a local results file), a resumed run's first epoch is timed, pause included.
    assert epoch_seconds(epochs, times) == {2: 2.0, 3: 2.5, 4: 5.5, 5: 1.0}
    assert epoch_seconds([1, 2, 3], [100.0, None, 104.0]) == {}  # an epoch written without a time


def test_a_trials_seconds_per_epoch_is_a_median_that_a_pause_does_not_move():
    cost = TrainingCost()
    for epoch, seconds in [(2, 1.0), (3, 1.1), (4, 60.0), (5, 0.9), (6, None), (7, float("nan"))]:
        cost.add(0, epoch, seconds)
    assert np.median(list(cost.seconds[0].values())) == pytest.approx(1.05)
    cost.add(0, 4, 1.0)  # an epoch timed again (a restore) replaces its time
    assert sorted(cost.seconds[0].values()) == [0.9, 1.0, 1.0, 1.1]
    for epoch in range(8, 30):
        cost.add(0, epoch, 2.0)
    assert len(cost.seconds[0]) == EPOCHS_KEPT  # memory stays flat however long a trial trains


def _table(seed=0, observed=30):
    """Rows where the objective depends on lr alone and the epoch time on width alone: ``observed``
    random rows (the ones observed), then 10 learning rates each at width 16 and at width 512."""
    rng = np.random.default_rng(seed)
    lr = list(10 ** rng.uniform(-4, 0, observed)) + [float(v) for v in np.repeat(10 ** rng.uniform(-4, 0, 10), 2)]
    width = list(rng.choice([16, 32, 64, 128, 256, 512], observed)) + [16, 512] * 10
    configs = [{"row": i, "lr": float(lr[i]), "width": int(width[i])} for i in range(len(lr))]
    space = {"lr": TypeAdapter(Domain).validate_python({"type": "loguniform", "min": 1e-4, "max": 1.0}),
             "width": TypeAdapter(Domain).validate_python({"type": "lograndint", "min": 16, "max": 512})}
    return configs, space


def _value(config, level):
    return (np.log10(config["lr"]) + 2) ** 2 + 1.0 / level


def _seconds(config):
    return 0.01 * config["width"]


def _observe(searcher, configs, ids, timed=True, last=LEVELS[-1]):
    for t in ids:
        searcher.remember(t, configs[t])
        for epoch in range(1, last + 1):
            searcher.on_result(t, epoch, _value(configs[t], epoch), _seconds(configs[t]) if timed and epoch > 1 else None)


def _narrow_over_wide(timed, finished=2, observed=12):
    """For the 3 most promising of the 10 learning rates offered at two widths, the narrow row's score
    over the wide one's, as the log of the ratio of expected improvement per second (timed) or of
    expected improvement (not timed), after ``finished`` trials trained to the end and the rest of
    ``observed`` to epoch 3."""
    first_pair = max(observed, 30)
    configs, space = _table(observed=first_pair)
    searcher = LearningCurveGPSearcher(TableCandidates(configs, space), LEVELS, random_fraction=0.0)
    _observe(searcher, configs, range(finished), timed)
    _observe(searcher, configs, range(finished, observed), timed, last=LEVELS[1])
    assert (searcher.cost.model(searcher._config_features) is None) is not timed
    scores = searcher.score(searcher.fit([]), searcher.candidates.x[first_pair:])
    if not timed:
        scores = np.log(np.maximum(scores, 1e-300))  # the same floor the timed score takes
    narrow, wide = scores[0::2], scores[1::2]
    best = sorted(range(10), key=lambda k: _value(configs[first_pair + 2 * k], 9))[:3]
    return np.array([narrow[k] - wide[k] for k in best])


def _edge_of_speed(finished, observed):
    """How much more the 32x-faster row of each pair is worth for its speed alone: its advantage per
    second over its advantage by expected improvement, on the same observations."""
    return np.exp(_narrow_over_wide(True, finished, observed) - _narrow_over_wide(False, finished, observed))


def test_the_gp_prefers_the_faster_of_configurations_equally_promising():
    # Width 16 trains 32 times faster than width 512 here: per second of training it is worth far more...
    assert (np.exp(_narrow_over_wide(timed=True)) > 10).all()
    # ... while by expected improvement alone the two are about even (width does not change the value).
    assert (abs(_narrow_over_wide(timed=False)) < np.log(2)).all()


def test_the_preference_for_fast_configurations_fades_as_trials_are_trained_to_the_end():
    early = _edge_of_speed(finished=COOLING_TRIALS // 4, observed=12)
    late = _edge_of_speed(finished=6 * COOLING_TRIALS, observed=6 * COOLING_TRIALS)
    # Seconds weigh 0.8 once a quarter of COOLING_TRIALS are trained to the end, 1/7 once six times
    # as many are: the 32x-faster row's edge for its speed shrinks from over 10x to under 2x.
    assert (early > 10).all()
    assert (late < 2).all() and (late > 1).all()


def test_too_few_timed_trials_fit_no_cost_model():
    configs, space = _table()
    searcher = LearningCurveGPSearcher(TableCandidates(configs, space), LEVELS)
    _observe(searcher, configs, range(MIN_TRIALS - 1))
    assert searcher.cost.model(searcher._config_features) is None
    _observe(searcher, configs, [MIN_TRIALS - 1])
    model = searcher.cost.model(searcher._config_features)
    wide = max(range(len(configs)), key=lambda r: configs[r]["width"])
    narrow = min(range(len(configs)), key=lambda r: configs[r]["width"])
    predicted = model.log_seconds(searcher.candidates.columns.one_hot(searcher.candidates.x[[wide, narrow]]))
    assert predicted[0] > predicted[1]  # the widest configuration is predicted slower than the narrowest


def test_a_snapshot_keeps_its_own_times_and_a_restore_rebuilds_them():
    configs, space = _table()
    live = LearningCurveGPSearcher(TableCandidates(configs, space), LEVELS)
    _observe(live, configs, range(10))
    snapshot = live.snapshot()
    live.on_result(3, 2, 0.5, 99.0)
    assert snapshot.cost.seconds[3][2] == pytest.approx(_seconds(configs[3]))
    records = [(t, configs[t], [(e, 0.0, s) for e, s in live.cost.seconds[t].items()]) for t in range(10)]
    restored = LearningCurveGPSearcher(TableCandidates(configs, space), LEVELS)
    restored.restore(records)
    assert restored.cost.seconds == live.cost.seconds


def _engine():
    manifest = {"objective": {"metric": "loss", "mode": "min"},
                "searchSpace": {"lr": {"type": "loguniform", "min": 1e-4, "max": 1.0}},
                "searcher": {"algorithm": "gp"},
                "scheduler": {"algorithm": "fifo", "maxResource": 3},
                "budget": {"maxTrials": 4, "parallelism": 2},
                "trialTemplate": {"spec": {"containers": [{"name": "trainer", "image": "x"}]}}}
    return ExperimentEngine("e", HPOExperimentSpec.model_validate(manifest))


def test_the_engine_keeps_epoch_times_with_the_trial_and_restores_them_into_the_searcher():
    engine = _engine()
    launch = engine.next_launch()
    tid = launch.trial.trial_id
    engine.on_observation(tid, 1, 0.9)
    engine.on_observation(tid, 2, 0.8, 1.5)
    assert engine.trials[tid].epoch_seconds == {2: 1.5}
    inner = getattr(engine.searcher, "inner", engine.searcher)
    assert inner.cost.seconds == {tid: {2: 1.5}}
    again = _engine()
    again.restore([engine.trials[tid]])
    inner = getattr(again.searcher, "inner", again.searcher)
    assert inner.cost.seconds == {tid: {2: 1.5}}


def test_the_operator_reads_epoch_times_from_the_sidecars_records():
    trial = {"metadata": {"name": "e-t0"},
             "spec": {"experiment": "e", "trialId": 0, "config": {"lr": 0.1}},
             "status": {"phase": "Running", "processed": 3, "observations": [
                 {"epoch": 1, "value": 0.9, "attempt": 1, "time": 1000.0},
                 {"epoch": 2, "value": 0.8, "attempt": 1, "time": 1002.0},
                 {"epoch": 3, "value": 0.7, "attempt": 2, "time": 1100.0},  # resumed: holds the pod start
                 {"epoch": 4, "value": 0.6, "attempt": 2, "time": 1103.0}]}}
    assert observations_of(trial) == [(1, 0.9, None), (2, 0.8, 2.0), (3, 0.7, None), (4, 0.6, 3.0)]
    assert read_trial(trial).state.epoch_seconds == {2: 2.0}  # the processed ones, for a rebuild
