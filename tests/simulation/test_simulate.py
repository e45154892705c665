"""Schedulers on real learning curves: the acceptance figure, reproducibility, and `hpo simulate`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hpo_operator.scheduling.factory import scheduler_spec_for
from hpo_operator.sim import compare, simulate
from hpo_operator.spec.experiment import SchedulerSpec, SearcherSpec

from support.paths import REPO, TABLES


def test_asha_promotion_finds_a_top_5_percent_model_at_least_1_5x_sooner_than_random(digits_table):
    """The README's acceptance run: digits, 8 workers, epoch scale 1000, 10 s overhead, 100 seeds
    (fewer seeds make the median of random search's heavy-tailed time swing widely)."""
    results = compare(digits_table, ["asha-promotion"], workers=8, seeds=100, epoch_scale=1000, overhead=10,
                      min_resource=9, max_trials=2000)
    asha, random = results["asha-promotion"], results["random"]
    assert asha.unreached_top5 == 0 and random.unreached_top5 == 0
    assert asha.speedup_top5 >= 1.5, (asha.top5_median_s, random.top5_median_s)


def test_the_same_seed_gives_the_same_run_and_configurations_are_shared(digits_table):
    spec = scheduler_spec_for("asha-promotion", SchedulerSpec(algorithm="asha", max_resource=81))
    a = simulate(digits_table, spec, workers=4, seed=3, max_trials=60, stop_at_targets=False, record_decisions=True)
    b = simulate(digits_table, spec, workers=4, seed=3, max_trials=60, stop_at_targets=False, record_decisions=True)
    assert a.decisions == b.decisions and a.end_time == b.end_time
    # ASHA trains far fewer epochs than 60 full trials would
    assert a.epochs < 0.5 * 60 * 81
    fifo = simulate(digits_table, scheduler_spec_for("fifo", spec), workers=4, seed=3, max_trials=60,
                    stop_at_targets=False)
    assert fifo.epochs == 60 * 81 and fifo.run_starts == 60


def test_overhead_is_paid_per_run_start(digits_table):
    spec = scheduler_spec_for("asha-promotion", SchedulerSpec(max_resource=27, promote_in_place=False))
    kwargs = dict(workers=1, seed=0, max_trials=9, stop_at_targets=False)
    base = simulate(digits_table, spec, overhead=0, **kwargs)
    slow = simulate(digits_table, spec, overhead=100, **kwargs)
    assert base.run_starts > 9  # resumes happened
    assert abs((slow.end_time - base.end_time) - 100 * base.run_starts) < 1e-6


def test_promote_in_place_saves_restarts(digits_table):
    spec = SchedulerSpec(algorithm="asha", max_resource=81, promote_in_place=True)
    kwargs = dict(workers=4, seed=1, max_trials=100, stop_at_targets=False)
    in_place = simulate(digits_table, spec, **kwargs)
    paused = simulate(digits_table, spec.model_copy(update={"promote_in_place": False}), **kwargs)
    assert in_place.run_starts < paused.run_starts


def test_cli_json_has_every_scheduler_and_random():
    out = subprocess.run(
        [sys.executable, "-m", "hpo_operator.cli.main", "simulate", str(TABLES / "wine_s22.json"),
         "--scheduler", "asha-promotion", "--scheduler", "median", "--seeds", "2", "--workers", "4",
         "--max-trials", "200", "--json"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    doc = json.loads(out.stdout)
    assert doc["table"] == "mlp-wine-s22"
    assert set(doc["results"]) == {"random", "asha-promotion", "median"}
    for entry in doc["results"].values():
        assert set(entry) >= {"top1_median_s", "top5_median_s", "speedup_top1", "speedup_top5"}
    # Each speedup is random search's median time over the scheduler's, both printed beside it.
    random = doc["results"]["random"]
    for name in ("asha-promotion", "median"):
        entry = doc["results"][name]
        for target in ("top1", "top5"):
            assert entry[f"speedup_{target}"] == pytest.approx(
                random[f"{target}_median_s"] / entry[f"{target}_median_s"]), (name, target)


def test_cli_says_when_a_target_is_never_reached():
    out = subprocess.run(
        [sys.executable, "-m", "hpo_operator.cli.main", "simulate", str(TABLES / "digits_s44.json"),
         "--scheduler", "asha-promotion", "--seeds", "1", "--max-trials", "3"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    assert "never reached" in out.stdout


def test_model_searchers_and_random_draw_each_row_at_most_once_and_runs_repeat(digits_table):
    spec = scheduler_spec_for("adaptive-promotion", SchedulerSpec(max_resource=27))
    kwargs = dict(workers=4, seed=2, max_trials=120, stop_at_targets=False, repeats=False)
    for searcher in (None, SearcherSpec(algorithm="kde"), SearcherSpec(algorithm="gp")):
        a = simulate(digits_table, spec, searcher_spec=searcher, record_decisions=True, **kwargs)
        rows = [row for row, _, _ in a.final.values()]
        assert len(rows) == 120 and len(set(rows)) == 120, searcher
        if searcher is not None and searcher.algorithm == "kde":
            b = simulate(digits_table, spec, searcher_spec=searcher, record_decisions=True, **kwargs)
            assert a.final == b.final and a.decisions == b.decisions  # synchronous fits: a function of the seed


def test_a_model_sees_only_results_that_happened_before_it_suggests(digits_table):
    """Each suggestion is made with exactly the results reported by then: none from the future."""
    from hpo_operator.search.features import TableCandidates
    from hpo_operator.search.kde import DensityRatioSearcher
    import hpo_operator.sim.simulator as simulator

    seen_at_suggest = []

    class Spy(DensityRatioSearcher):
        def suggest(self, trial_index, pending=()):
            seen_at_suggest.append((trial_index, self.data.count()))
            return super().suggest(trial_index, pending)

    original = simulator.table_searcher
    simulator.table_searcher = lambda table, spec, sched, seed, repeats: Spy(
        TableCandidates(table.configs, table.space), [1, 3, 9, 27], seed=seed)
    try:
        spec = scheduler_spec_for("fifo", SchedulerSpec(max_resource=27))
        one = simulate(digits_table, spec, workers=1, seed=0, max_trials=12, stop_at_targets=False,
                       searcher_spec=SearcherSpec(algorithm="kde"), repeats=False)
        # FIFO with one worker: trial k starts when trial k-1 ends, having seen the levels 1, 3, 9
        # and 27 of the k trials before it.
        assert seen_at_suggest == [(k, 4 * k) for k in range(12)] and one.trials == 12
        seen_at_suggest.clear()
        simulate(digits_table, spec, workers=2, seed=0, max_trials=12, stop_at_targets=False,
                 searcher_spec=SearcherSpec(algorithm="kde"), repeats=False)
    finally:
        simulator.table_searcher = original
    # Two workers: both first trials start at time 0 with nothing seen (trial 0 has not trained yet);
    # later ones see the finished runs and what the running one reported so far, never more.
    assert seen_at_suggest[:2] == [(0, 0), (1, 0)]
    counts = [n for _, n in seen_at_suggest]
    assert counts == sorted(counts) and all(n < 4 * k for k, n in seen_at_suggest[2:])


def test_cli_default_json_has_intervals_regime_and_unreached_counts():
    out = subprocess.run(
        [sys.executable, "-m", "hpo_operator.cli.main", "simulate", str(TABLES / "digits_s44.json"),
         "--scheduler", "default", "--scheduler", "asha-promotion+kde", "--seeds", "3", "--workers", "4",
         "--max-trials", "30", "--json"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    doc = json.loads(out.stdout)
    assert set(doc["results"]) == {"random", "default", "asha-promotion+kde"}
    assert doc["settings"]["draws"] == "without-repeats"  # a model is compared: every method without repeats
    for entry in doc["results"].values():
        assert set(entry) >= {"top1_ci95_s", "top5_ci95_s", "speedup_top1_ci95", "speedup_top5_ci95"}
        # 30 trials rarely reach the top 1% of 400 rows: seeds that never do are counted, not dropped
        assert 0 <= entry["seeds_unreached_top1"] <= 3
    assert sum(e["seeds_unreached_top1"] for e in doc["results"].values()) > 0


def test_cli_refuses_a_model_with_draws_with_replacement():
    out = subprocess.run(
        [sys.executable, "-m", "hpo_operator.cli.main", "simulate", str(TABLES / "wine_s22.json"),
         "--scheduler", "fifo+kde", "--draws", "with-replacement", "--seeds", "1"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert out.returncode != 0 and "without-repeats" in out.stderr


def test_speedup_intervals_count_seeds_that_never_reached_the_target():
    from hpo_operator.sim.compare import bootstrap_intervals

    never = [None] * 5
    # Neither method reached it in any resample: level, not "no speedup".
    assert bootstrap_intervals(never, never)[1] == (1.0, 1.0)
    # Only this method reached it: its speedup is unbounded above (None), its time finite.
    times, speedup = bootstrap_intervals([10.0] * 5, never)
    assert times == (10.0, 10.0) and speedup == (None, None)
    # Only random search reached it: no speedup at all.
    assert bootstrap_intervals(never, [10.0] * 5) == ((None, None), (0.0, 0.0))
    # Twice as fast on every seed: exactly 2x, whatever the resample.
    assert bootstrap_intervals([5.0, 10.0, 15.0], [10.0, 20.0, 30.0])[1] == (2.0, 2.0)
