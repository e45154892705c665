"""Schedulers on real learning curves: the acceptance figure, reproducibility, and `hpo simulate`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hpo_operator.scheduling.factory import scheduler_spec_for
from hpo_operator.sim import compare, simulate
from hpo_operator.spec.experiment import SchedulerSpec

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
