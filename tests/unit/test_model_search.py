"""Model-based searchers: valid points on every domain type, they learn, and restore rebuilds them."""

from __future__ import annotations

import functools
import math
import time
from typing import Optional

import numpy as np
import pytest
from pydantic import TypeAdapter

import hpo_operator.search.background as background_module
import hpo_operator.search.gp as gp_module
from hpo_operator.engine import ExperimentEngine
from hpo_operator.search import DensityRatioSearcher, LearningCurveGPSearcher, RandomSearcher, finite_values
from hpo_operator.search.background import BackgroundFits
from hpo_operator.search.features import SpaceCandidates, TableCandidates
from hpo_operator.search.kde import BOHB, FOCUSED, _Density
from hpo_operator.search.searchers import make_searcher
from hpo_operator.spec.experiment import HPOExperimentSpec
from hpo_operator.spec.search_space import Choice, Domain, FinRange, LogRandInt, LogUniform, RandInt, Uniform

domain = TypeAdapter(Domain).validate_python
LEVELS = [1, 3, 9, 27]
BOHB_KDE = functools.partial(DensityRatioSearcher, recipe=BOHB)  # the kde under ASHA
SEARCHERS = [DensityRatioSearcher, BOHB_KDE, LearningCurveGPSearcher]

EVERY_TYPE_MANIFEST = {
    "lr": {"type": "loguniform", "min": 1e-4, "max": 1.0},
    "momentum": {"type": "uniform", "min": 0.0, "max": 0.99},
    "layers": {"type": "randint", "min": 1, "max": 4},
    "batch": {"type": "lograndint", "min": 8, "max": 256},
    "act": {"type": "choice", "values": ["relu", "tanh", "gelu"]},
    "dropout": {"type": "finrange", "min": 0.0, "max": 0.5, "size": 6},
    "width": {"type": "logfinrange", "min": 16, "max": 512, "size": 6, "cast_int": True},
}
EVERY_TYPE = {name: domain(d) for name, d in EVERY_TYPE_MANIFEST.items()}


def valid(name, value):
    d = EVERY_TYPE[name]
    if isinstance(d, Choice):
        return value in d.values
    if isinstance(d, FinRange):  # LogFinRange too
        return value in finite_values(d)
    if isinstance(d, (RandInt, LogRandInt)):
        return isinstance(value, int) and d.min <= value <= d.max
    assert isinstance(d, (Uniform, LogUniform))
    return isinstance(value, float) and math.isfinite(value) and d.min <= value <= d.max


def objective(config, resource=27):
    """A synthetic learning curve: best near lr=1e-2, momentum 0.9, relu, dropout 0.1; error falls with epochs."""
    final = ((math.log10(config["lr"]) + 2) ** 2 + 4 * (config["momentum"] - 0.9) ** 2
             + (0 if config["act"] == "relu" else 0.5) + abs(config["dropout"] - 0.1))
    return final + 1.0 / resource


def run(searcher, n, workers=4):
    """Suggest ``n`` trials, ``workers`` at a time; each reports every level. Returns the best final value."""
    best = math.inf
    for start in range(0, n, workers):
        batch = list(range(start, min(start + workers, n)))
        configs = {}
        for i in batch:
            configs[i] = searcher.suggest(i, pending=[j for j in batch if j < i])
        for i in batch:
            for r in LEVELS:
                searcher.on_result(i, r, objective(configs[i], r))
            best = min(best, objective(configs[i]))
    return best


@pytest.mark.parametrize("cls", SEARCHERS)
def test_every_suggestion_is_a_valid_point_of_every_domain_type(cls):
    searcher = cls(SpaceCandidates(EVERY_TYPE), LEVELS, seed=3, random_fraction=0.2, n_candidates=64)
    for i in range(40):
        config = searcher.suggest(i, pending=[i - 1] if i else [])
        assert set(config) == set(EVERY_TYPE)
        for name, value in config.items():
            assert valid(name, value), (name, value)
        for r in LEVELS[: 1 + i % 4]:
            searcher.on_result(i, r, objective(config, r) if i % 7 else float("nan"))


@pytest.mark.parametrize("cls", SEARCHERS)
def test_the_model_beats_random_search_on_a_synthetic_function(cls):
    space = {k: EVERY_TYPE[k] for k in ("lr", "momentum", "act", "dropout")}
    model_best, random_best = [], []
    for seed in range(10):
        model = cls(SpaceCandidates(space), LEVELS, seed=seed, random_fraction=0.2, n_candidates=128)
        model_best.append(run(model, 60))
        random_best.append(run(RandomSearcher(space, seed), 60))
    assert np.median(model_best) < 0.6 * np.median(random_best), (model_best, random_best)


@pytest.mark.parametrize("cls", SEARCHERS)
def test_a_restored_searcher_holds_the_same_observations_and_suggests_alike(cls):
    live = cls(SpaceCandidates(EVERY_TYPE), LEVELS, seed=1, n_candidates=64)
    run(live, 24)
    records = [(t, live.configs[t], [(r, objective(live.configs[t], r)) for r in LEVELS]) for t in live.configs]
    a = cls(SpaceCandidates(EVERY_TYPE), LEVELS, seed=1, n_candidates=64)
    a.restore(records)
    b = cls(SpaceCandidates(EVERY_TYPE), LEVELS, seed=1, n_candidates=64)
    b.restore(records)
    assert a.data.by_level == live.data.by_level and a.configs == live.configs
    assert [a.suggest(i, pending=[24]) for i in range(25, 29)] == [b.suggest(i, pending=[24]) for i in range(25, 29)]
    # A created trial's configuration never changes, whatever was learned since.
    assert a.suggest(3) == live.configs[3]


def test_kde_is_a_pure_function_of_the_records():
    live = DensityRatioSearcher(SpaceCandidates(EVERY_TYPE), LEVELS, seed=1, n_candidates=64)
    run(live, 24)
    records = [(t, live.configs[t], [(r, objective(live.configs[t], r)) for r in LEVELS]) for t in live.configs]
    restored = DensityRatioSearcher(SpaceCandidates(EVERY_TYPE), LEVELS, seed=1, n_candidates=64)
    restored.restore(records)
    assert [restored.suggest(i) for i in range(24, 30)] == [live.suggest(i) for i in range(24, 30)]


@pytest.mark.parametrize("cls", SEARCHERS)
def test_table_candidates_are_rows_used_at_most_once(cls):
    rng = np.random.default_rng(0)
    configs = [{"lr": float(10 ** rng.uniform(-4, 0)), "act": str(rng.choice(["relu", "tanh"])),
                "units": int(rng.integers(16, 512))} for _ in range(30)]
    searcher = cls(TableCandidates(configs), LEVELS, seed=0, random_fraction=0.3)
    rows = []
    for i in range(30):
        row = searcher.suggest(i)["row"]
        rows.append(row)
        searcher.on_result(i, 1, (math.log10(configs[row]["lr"]) + 2) ** 2)
    assert sorted(rows) == list(range(30))
    assert searcher.exhausted(30) and searcher.suggest(30) is None


def test_kde_in_a_table_tries_the_row_nearest_its_best_draw_not_an_empty_corner():
    """In a table the kde runs the algorithm of a continuous space, held to the rows: the best of its draws
    from the good density, then the unused row nearest to it. Scoring every unused row instead picked
    the one in a corner nothing was observed in (l/g there tends to (bad + 1) / (good + 1))."""
    observed = [float(v) for v in np.logspace(-3, 0, 40)]  # errors lowest near lr = 1e-2
    configs = [{"lr": v} for v in observed] + [{"lr": 1.2e-2}, {"lr": 1e-5}]  # two unused rows
    for seed in range(10):
        searcher = DensityRatioSearcher(TableCandidates(configs), LEVELS, seed=seed, random_fraction=0.0)
        for i, lr in enumerate(observed):
            searcher.remember(i, {"row": i})
            searcher.on_result(i, 27, (math.log10(lr) + 2) ** 2)
        assert searcher.suggest(len(observed)) == {"row": 40}, seed


def test_engine_restore_rebuilds_the_searcher():
    spec = HPOExperimentSpec.model_validate({
        "objective": {"metric": "loss", "mode": "min"},
        "searchSpace": {"lr": {"type": "loguniform", "min": 1e-4, "max": 1.0},
                        "act": {"type": "choice", "values": ["relu", "tanh"]}},
        "searcher": {"algorithm": "kde", "seed": 2},
        "scheduler": {"algorithm": "fifo", "maxResource": 3},
        "budget": {"maxTrials": 30, "parallelism": 2},
        "trialTemplate": {"spec": {"containers": [{"name": "t", "image": "x"}]}},
    })
    engine = ExperimentEngine("e", spec, background_fits=False)
    for _ in range(12):
        launch = engine.next_launch()
        for epoch in range(1, 4):
            engine.on_observation(launch.trial.trial_id, epoch, (math.log10(launch.trial.config["lr"]) + 2) ** 2)
        engine.on_run_exit(launch.trial.trial_id, succeeded=True)
    restored = ExperimentEngine("e", spec, background_fits=False)
    restored.restore([t for t in engine.trials.values()])
    assert restored.searcher.data.by_level == engine.searcher.data.by_level
    assert restored.next_launch().trial.config == engine.next_launch().trial.config


def _kde_manifest(scheduler: dict, space: Optional[dict] = None) -> HPOExperimentSpec:
    return HPOExperimentSpec.model_validate({
        "objective": {"metric": "loss"},
        "searchSpace": space or {"lr": {"type": "loguniform", "min": 1e-4, "max": 1.0}},
        "searcher": {"algorithm": "kde"},
        "scheduler": scheduler,
        "trialTemplate": {"spec": {"containers": [{"name": "t", "image": "x"}]}},
    })


@pytest.mark.parametrize("scheduler, recipe", [
    ({"maxResource": 27}, FOCUSED),  # the default scheduler: adaptive
    ({"algorithm": "asha", "maxResource": 27}, BOHB),
    ({"algorithm": "asha", "type": "stopping", "maxResource": 27}, FOCUSED),
    ({"algorithm": "hyperband", "maxResource": 27}, FOCUSED),
    ({"algorithm": "fifo", "maxResource": 27}, FOCUSED),
])
def test_the_kde_runs_bohbs_recipe_under_asha_promotion_and_the_focused_one_elsewhere(scheduler, recipe):
    """The recipe follows the scheduler the manifest names, on a cluster (the engine, its fits in the
    background) and in simulation alike, so a restarted operator rebuilds the same searcher."""
    spec = _kde_manifest(scheduler)
    engine = ExperimentEngine("e", spec)
    assert engine.searcher.inner.recipe is recipe
    assert engine.searcher.inner.random_fraction == spec.searcher.random_fraction == 0.2
    simulated = make_searcher(spec.searcher, {}, levels=LEVELS, candidates=TableCandidates([{"lr": 0.1}]),
                              scheduler=spec.scheduler)
    assert simulated.recipe is recipe


def _observed(searcher, n, level=27):
    for i in range(n):
        config = {"lr": float(10 ** (-4 + 4 * i / max(n - 1, 1))), "momentum": (i * 0.37) % 0.99}
        searcher.remember(i, config)
        searcher.on_result(i, level, objective({**config, "act": "relu", "dropout": 0.1}))


def test_bohbs_recipe_fits_only_where_good_and_bad_both_hold_more_points_than_dimensions():
    """Two dimensions: a good set of max(2, 15%) points needs 20 observations to hold 3, more than 2;
    until then every draw is random. The focused recipe fits from d + 2 = 4 observations."""
    space = {k: EVERY_TYPE[k] for k in ("lr", "momentum")}
    for n, fits in [(19, False), (20, True)]:
        bohb = DensityRatioSearcher(SpaceCandidates(space), LEVELS, recipe=BOHB)
        _observed(bohb, n)
        assert (bohb.fit([]) is not None) is fits, n
        if fits:
            model = bohb.fit([])
            assert (len(model.good.points), len(model.bad.points)) == (3, 17)
    focused = DensityRatioSearcher(SpaceCandidates(space), LEVELS, recipe=FOCUSED)
    _observed(focused, 4)
    assert focused.fit([]) is not None


def _two_levels(searcher, n_low, n_top, top_agrees):
    """``n_low`` trials seen at epoch 1 (ranked by the objective), the first ``n_top`` of them at 27 too,
    where the ranks are the same (``top_agrees``) or reversed."""
    for i in range(n_low):
        config = {"lr": float(10 ** (-4 + 4 * i / max(n_low - 1, 1))), "momentum": (i * 0.37) % 0.99,
                  "layers": 2, "batch": 32, "act": "relu", "dropout": 0.1, "width": 64}
        searcher.remember(i, config)
        value = objective(config)
        searcher.on_result(i, 1, value)
        if i < n_top:
            searcher.on_result(i, 27, value if top_agrees else -value)


@pytest.mark.parametrize("n_top, top_agrees, level", [
    (0, True, None),     # nothing seen at the top: epoch 1 is unverified, the draw is random
    (7, True, None),     # 7 pairs agree, too few to tell
    (8, True, 1),        # 8 agreeing pairs: epoch 1's 60 observations are fitted on
    (8, False, None),    # 8 pairs that reverse the order: never fitted at epoch 1
    (12, False, 27),     # ... and once the top holds enough for a model (d + 2 = 9), it is fitted on
])
def test_the_focused_kde_fits_a_lower_level_only_once_its_ranks_agree_with_the_top(n_top, top_agrees, level):
    """Where epoch-1 ranks mislead, a model of them sends draws to the wrong region (random does better):
    the focused recipe (the default's) fits below the top level only where 8 or more trials seen at both
    rank alike (the scheduler's measure of a rung it trusts). BOHB's recipe, as BOHB, fits the highest
    level with enough points whatever they say."""
    focused = DensityRatioSearcher(SpaceCandidates(EVERY_TYPE), LEVELS, recipe=FOCUSED)
    _two_levels(focused, 60, n_top, top_agrees)
    assert focused.fit_level() == level
    assert (focused.fit([]) is None) is (level is None)
    bohb = DensityRatioSearcher(SpaceCandidates(EVERY_TYPE), LEVELS, recipe=BOHB)
    _two_levels(bohb, 60, n_top, top_agrees)
    assert bohb.fit_level() == 1  # 60 points: BOHB's good set of 9 and bad set of 51 both exceed d = 7


@pytest.mark.parametrize("min_agreement, level", [
    (None, None),  # the default bar (0.5): 8 reversed pairs keep epoch 1 out of the model
    (-1.0, 1),     # the manifest waives the check: epoch 1's 60 observations are fitted on, as BOHB does
])
def test_the_manifests_min_agreement_is_the_bar_the_kde_holds_a_lower_level_to(min_agreement, level):
    """One knob for one question ("do early epochs rank as the end does?"): the scheduler's
    minAgreement also decides where the kde may fit, on a cluster and in simulation."""
    scheduler = {"maxResource": 27} if min_agreement is None else {"maxResource": 27, "minAgreement": min_agreement}
    spec = _kde_manifest(scheduler, EVERY_TYPE_MANIFEST)
    on_cluster = ExperimentEngine("e", spec).searcher.inner
    simulated = make_searcher(spec.searcher, {}, levels=LEVELS, scheduler=spec.scheduler,
                              candidates=SpaceCandidates(EVERY_TYPE))
    for searcher in (on_cluster, simulated):
        _two_levels(searcher, 60, 8, top_agrees=False)
        assert searcher.fit_level() == level


def test_running_trials_count_as_bad_in_the_focused_recipe_only():
    space = {k: EVERY_TYPE[k] for k in ("lr", "momentum")}
    for recipe, bad in [(FOCUSED, 17 + 2), (BOHB, 17)]:
        searcher = DensityRatioSearcher(SpaceCandidates(space), LEVELS, recipe=recipe)
        _observed(searcher, 20)
        for running in (20, 21):
            searcher.remember(running, {"lr": 0.5, "momentum": 0.5})
        assert len(searcher.fit([20, 21]).bad.points) == bad, recipe.name


def test_bohbs_densities_have_scotts_bandwidth_per_column_and_no_uniform_floor():
    """BOHB's kernels: Scott's rule per numeric column, at least 0.1, so a column whose good values
    spread wider gets wider kernels; no uniform component, so a region far from every point has a
    density near 0 where the focused recipe's stays near the uniform prior's 1/(n + 1)."""
    space = {k: EVERY_TYPE[k] for k in ("lr", "momentum")}
    searcher = DensityRatioSearcher(SpaceCandidates(space), LEVELS, recipe=BOHB)
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(0.0, 1.0, 40), rng.uniform(0.45, 0.55, 40)])
    bohb = _Density.fit(points, searcher.candidates.columns, BOHB)
    scott = points[:, 0].std() * 40 ** (-1 / 6)
    assert bohb.bandwidth[0] == pytest.approx(scott) and bohb.bandwidth[0] > 0.1
    assert bohb.bandwidth[1] == 0.1  # Scott's 0.02 on the narrow column, held at the floor
    focused = _Density.fit(points, searcher.candidates.columns, FOCUSED)
    far = np.array([[0.5, 0.0]])  # momentum far outside the points' band
    assert bohb.log_pdf(far)[0] < -10
    assert focused.log_pdf(far)[0] == pytest.approx(-np.log(41), abs=0.01)


class _SlowModel(DensityRatioSearcher):
    """A model whose fit takes 0.5 s and whose picks are recognisable (momentum exactly 0.5)."""

    def fit(self, pending):
        time.sleep(0.5)
        return "model"

    def model_pick(self, rng, pending):
        model = self.fit(pending)
        return {**self.candidates.decode(self.candidates.uniform(rng, 1)[0]), "momentum": 0.5} if model else None


def test_background_fits_never_hold_up_a_suggestion_or_a_result(monkeypatch):
    monkeypatch.setattr(background_module, "FIT_SHARE", 1.0)  # no rest between fits: this test is about waiting
    searcher = BackgroundFits(_SlowModel(SpaceCandidates(EVERY_TYPE), LEVELS, seed=0, random_fraction=0.0))
    started = time.monotonic()
    first = searcher.suggest(0)
    searcher.on_result(0, 1, 0.5)  # a fit is running now: the result goes in at once
    assert time.monotonic() - started < 0.2
    assert first["momentum"] != 0.5  # no fit had finished: a random draw
    assert searcher.wait_idle(timeout=5)
    second = searcher.suggest(1, pending=[0])
    assert second["momentum"] == 0.5  # the pick of the last finished fit
    assert searcher.suggest(0) == first  # a created trial's configuration never changes
    assert searcher.fits >= 1
    searcher.close()


def test_background_fits_rest_so_that_fitting_takes_a_bounded_share_of_a_core(monkeypatch):
    """Results arriving all the time (1,000 running trials) must not keep a core fitting: after each fit
    the worker rests, and the results that came meanwhile go into one fit after the rest."""
    monkeypatch.setattr(background_module, "FIT_SHARE", 0.5)
    model = _SlowModel(SpaceCandidates(EVERY_TYPE), LEVELS, seed=0, random_fraction=0.0)
    searcher = BackgroundFits(model)
    started = time.monotonic()
    searcher.suggest(0)
    for i in range(20):  # 20 results in 1 s, each of which would call for a refit
        searcher.on_result(0, LEVELS[i % len(LEVELS)], float(i))
        time.sleep(0.05)
    assert searcher.wait_idle(timeout=10)
    elapsed = time.monotonic() - started
    assert searcher.fits <= 2 and elapsed >= 2 * 0.5 / 0.5  # fit 0.5 s, rest 0.5 s, then the one refit
    searcher.close()


def test_snapping_many_candidates_at_once_equals_the_value_by_value_round_trip():
    candidates = SpaceCandidates(EVERY_TYPE)
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.3, 1.3, (2000, len(candidates.names)))  # out-of-range positions too
    for j, k in enumerate(candidates.columns.levels):
        if k:
            x[:, j] = rng.uniform(-1, k + 1, len(x))
    expected = np.array([candidates.encode(candidates.decode(row)) for row in x])
    np.testing.assert_allclose(candidates.snap(x), expected, rtol=0, atol=1e-12)


def _gp_with_history(seed=4, trials=30):
    """A GP searcher with results at several levels, one value overwritten, a NaN and two trials running."""
    searcher = LearningCurveGPSearcher(SpaceCandidates(EVERY_TYPE), LEVELS, seed=seed, n_candidates=32)
    for i in range(trials):
        config = searcher.suggest(i, pending=[i - 1, i - 2] if i > 1 else [])
        if i >= trials - 2:
            continue  # still running: remembered, nothing observed
        for r in LEVELS[: 1 + i % 4]:
            searcher.on_result(i, r, objective(config, r) if i % 9 else float("nan"))
    searcher.on_result(3, LEVELS[0], 0.0)  # a value reported again replaces the first
    return searcher


def _records(searcher):
    return [(t, searcher.configs[t], [(r, v) for r in LEVELS if (v := searcher.data.by_level[r].get(t)) is not None])
            for t in searcher.configs]


def _assert_ranked_as_the_records(searcher):
    for level in LEVELS:
        observed = searcher.data.by_level[level]
        assert searcher.best_observed(level, len(observed) + 1) == sorted(observed, key=lambda t: (observed[t], t))


def test_gp_observations_kept_in_rank_order_equal_a_recomputation():
    live = _gp_with_history()
    assert any(np.isinf(v) for v in live.data.by_level[LEVELS[0]].values())  # NaN results rank worst
    _assert_ranked_as_the_records(live)
    restored = LearningCurveGPSearcher(SpaceCandidates(EVERY_TYPE), LEVELS, seed=4, n_candidates=32)
    restored.restore(_records(live))
    _assert_ranked_as_the_records(restored)
    live.restore(_records(live))  # records a searcher already holds, restored again
    _assert_ranked_as_the_records(live)
    snapshot = live.snapshot()
    live.on_result(28, LEVELS[0], -1.0)  # a running trial's first result, after the snapshot
    live.on_result(0, LEVELS[0], 5.0)
    _assert_ranked_as_the_records(live)
    _assert_ranked_as_the_records(snapshot)  # the copy a background fit uses is its own
    assert live.best_observed(LEVELS[0], 1) == [28] and snapshot.best_observed(LEVELS[0], 1) != [28]
    centres = live.local_centres(live.fit([29]))
    assert 29 in centres and set(live.best_observed(LEVELS[0], gp_module.TOP_PER_LEVEL)) <= set(centres)


def test_gp_training_set_is_the_highest_fidelities_then_the_newest_trials(monkeypatch):
    monkeypatch.setattr(gp_module, "MAX_POINTS", 20)
    searcher = _gp_with_history(trials=40)
    assert searcher.data.count() > 20
    ids, levels, _ = searcher._training_set()
    every = sorted(((r, t) for r in LEVELS for t in searcher.data.by_level[r]), key=lambda p: (-p[0], -p[1]))
    assert list(zip(levels, ids)) == every[:20]


def _assert_same_model(searcher, a, b):
    x = searcher.candidates.uniform(np.random.default_rng(0), 64)
    np.testing.assert_allclose(searcher.score(a, x), searcher.score(b, x), rtol=1e-7, atol=1e-10)
    assert a.incumbent == pytest.approx(b.incumbent, rel=1e-9)


def test_gp_reuses_its_fit_until_an_observation_arrives_and_equals_a_fresh_fit():
    live = _gp_with_history()
    pending = [28, 29]
    first = live._base_fit()
    assert live._base_fit() is first  # nothing arrived: the factorised posterior is reused
    live.fit(pending)
    assert live._base_fit() is first  # running trials enter per suggestion, not into the cached fit

    def fresh_fit():
        # A searcher rebuilt from the records (as after an operator restart), with the same hyperparameters.
        fresh = LearningCurveGPSearcher(SpaceCandidates(EVERY_TYPE), LEVELS, seed=4, n_candidates=32)
        fresh.restore(_records(live))
        fresh._hyper, fresh._hyper_n = live._hyper, live._hyper_n
        return fresh

    for trial, value in ((5, 0.25), (28, 0.5)):  # a known trial's new value; a running trial's first
        live.on_result(trial, LEVELS[0], value)
        _assert_same_model(live, live.fit(pending), fresh_fit().fit(pending))
    # A background fit's posterior is adopted only while no observation arrived after its snapshot.
    # Each case starts with a new observation, so the live searcher's own fit is out of date.
    live.on_result(6, LEVELS[1], 0.75)
    snapshot = live.snapshot()
    snapshot.fit(pending)
    live.adopt_cache(snapshot)
    assert live._base_fit() is snapshot._base_fit()
    live.on_result(6, LEVELS[1], 0.5)
    snapshot = live.snapshot()
    snapshot.fit(pending)
    live.on_result(7, LEVELS[1], 0.75)  # arrived while the snapshot was fitted
    live.adopt_cache(snapshot)
    assert live._fitted is not snapshot._fitted
    live.on_result(6, LEVELS[1], 0.25)
    snapshot = live.snapshot()
    snapshot.on_result(8, LEVELS[0], 0.125)  # the copy and the live searcher each took a different observation
    snapshot.fit(pending)
    live.on_result(9, LEVELS[0], 0.125)
    live.adopt_cache(snapshot)
    assert live._fitted is not snapshot._fitted
    _assert_same_model(live, live.fit(pending), fresh_fit().fit(pending))


def test_background_gp_fits_hand_their_current_posterior_to_the_live_searcher():
    searcher = BackgroundFits(LearningCurveGPSearcher(SpaceCandidates(EVERY_TYPE), LEVELS, seed=2,
                                                      random_fraction=0.0, n_candidates=32))
    for i in range(12):
        config = searcher.suggest(i, pending=[i - 1] if i else [])
        assert all(valid(name, value) for name, value in config.items())
        for r in LEVELS[:2]:
            searcher.on_result(i, r, objective(config, r))
        assert searcher.wait_idle(timeout=20)
    live = searcher.inner
    assert live._fitted is not None and live._fitted[0] == live.data.version  # adopted, and current
    adopted = live._fitted
    searcher.suggest(12, pending=[11])  # no new observation: the next fit reuses that posterior
    assert searcher.wait_idle(timeout=20)
    assert live._fitted is adopted
    searcher.close()
