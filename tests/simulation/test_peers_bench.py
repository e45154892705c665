"""bench/peers.py's parts that need no Syne Tune: rows as the only proposals, Optuna on the simulated
clock of `hpo simulate`, and medians that count seeds that never reached a target."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from hpo_operator.sim import LearningCurveTable

from support.paths import BENCH, REPO

sys.path.insert(0, str(BENCH))
from peerbench.optuna_run import run_optuna  # noqa: E402
from peerbench.protocol import Protocol, load_space  # noqa: E402
from peerbench.rows import RowPool  # noqa: E402
from peerbench.summary import leads, summarise  # noqa: E402

SPACE = {"x": {"type": "uniform", "min": 0.0, "max": 1.0},
         "lr": {"type": "loguniform", "min": 1e-4, "max": 1.0},
         "act": {"type": "choice", "values": ["tanh", "relu"]}}


def write_table(path, rows: int = 12, epochs: int = 3) -> None:
    """Rows whose error is their x at every epoch plus a shrinking offset: ranks never change, so the
    best row is never pruned or paused, and every epoch takes one second."""
    rng = np.random.default_rng(0)
    configs = [{"x": float(x), "lr": float(10 ** rng.uniform(-4, 0)), "act": ["tanh", "relu"][i % 2]}
               for i, x in enumerate(rng.permutation(np.linspace(0.05, 0.95, rows)))]
    curves = [[c["x"] + 0.1 * (epochs - e) for e in range(1, epochs + 1)] for c in configs]
    path.write_text(json.dumps({"name": path.stem, "metric": "val_error", "mode": "min", "search_space": SPACE,
                                "configs": configs, "curves": curves, "epoch_seconds": [[1.0] * epochs] * rows}))


def test_rows_are_proposed_once_nearest_first_then_none_when_all_are_used():
    configs = [{"x": 0.1, "lr": 0.01, "act": "tanh"}, {"x": 0.5, "lr": 0.01, "act": "tanh"},
               {"x": 0.5, "lr": 0.01, "act": "relu"}]
    pool = RowPool(configs, SPACE, repeats=False)
    assert pool.row_of({"x": 0.5, "lr": 0.01, "act": "relu"}) == 2 and pool.row_of({"x": 0.3, "lr": 0.01, "act": "relu"}) is None
    assert pool.take_nearest({"x": 0.45, "lr": 0.01, "act": "relu"}) == 2  # the category counts
    assert pool.take_nearest({"x": 0.45, "lr": 0.01, "act": "relu"}) == 1  # 2 is used: the next nearest
    assert pool.remaining == 1
    assert pool.take_random(np.random.default_rng(0)) == 0
    assert pool.take_nearest({"x": 0.1, "lr": 0.01, "act": "tanh"}) is None and pool.take_random(np.random.default_rng(0)) is None
    again = RowPool(configs, SPACE, repeats=True)
    assert [again.take_nearest({"x": 0.1, "lr": 0.01, "act": "tanh"}) for _ in range(3)] == [0, 0, 0]


def test_distances_use_the_log_scale_of_a_log_scaled_domain():
    configs = [{"x": 0.5, "lr": 1e-4, "act": "tanh"}, {"x": 0.5, "lr": 0.1, "act": "tanh"}]
    pool = RowPool(configs, SPACE, repeats=True)
    # 0.004 is linearly nearer 1e-4 but logarithmically nearer 0.1
    assert pool.take_nearest({"x": 0.5, "lr": 0.004, "act": "tanh"}) == 1


def test_random_rows_are_uniform_over_the_unused_ones():
    configs = [{"x": x, "lr": 0.01, "act": "tanh"} for x in (0.0, 0.01, 0.02, 0.03, 1.0)]
    counts = np.zeros(5)
    for seed in range(400):
        counts[RowPool(configs, SPACE, repeats=False).take_random(np.random.default_rng(seed))] += 1
    assert counts.min() > 50  # the isolated row 4 is not favoured, the crowded ones not starved


def test_duplicate_rows_and_a_table_without_its_space_are_refused(tmp_path):
    with pytest.raises(ValueError, match="duplicate"):
        RowPool([{"x": 0.1, "lr": 0.1, "act": "tanh"}] * 2, SPACE, repeats=False)
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"configs": []}))
    with pytest.raises(ValueError, match="no search_space"):
        load_space(path)


def test_optuna_runs_on_the_simulated_clock_of_hpo_simulate(tmp_path):
    path = tmp_path / "ranked.json"
    write_table(path)
    table = LearningCurveTable.load(path)
    # 12 workers, 12 rows: every row starts at once; the best is trained to the end without a pause:
    # 10 s start overhead + 3 epochs of 1 s.
    protocol = Protocol(workers=12, overhead=10.0, epoch_scale=1.0, max_trials=100, draws="without-repeats")
    reached, started = run_optuna(table, load_space(path), protocol, seed=0)
    assert reached == {0.01: 13.0, 0.05: 13.0}
    assert started == 12  # every row once, and no more: none is left to propose
    scaled = run_optuna(table, load_space(path), Protocol(workers=12, overhead=10.0, epoch_scale=100.0), seed=0)[0]
    assert scaled == {0.01: 310.0, 0.05: 310.0}


def test_optuna_repeats_a_seeds_run(tmp_path):
    path = tmp_path / "ranked.json"
    write_table(path, rows=60, epochs=9)
    table = LearningCurveTable.load(path)
    protocol = Protocol(workers=4, overhead=10.0, epoch_scale=1.0, max_trials=40, draws="without-repeats")
    runs = [run_optuna(table, load_space(path), protocol, seed=3) for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]


def test_optuna_starts_no_more_trials_than_the_budget(tmp_path):
    path = tmp_path / "ranked.json"
    write_table(path)
    table = LearningCurveTable.load(path)
    protocol = Protocol(workers=4, overhead=10.0, epoch_scale=1.0, max_trials=5, draws="with-replacement")
    assert run_optuna(table, load_space(path), protocol, seed=0)[1] == 5


def test_medians_count_a_seed_that_never_reached_the_target_and_ratios_are_against_random():
    runs = {"random": [{0.01: 100.0, 0.05: 10.0}, {0.01: 300.0, 0.05: 30.0}, {0.01: None, 0.05: 20.0}],
            "fast": [{0.01: 50.0, 0.05: 5.0}, {0.01: None, 0.05: 10.0}, {0.01: None, 0.05: 15.0}]}
    rows = {r.method: r for r in summarise(runs, "random")}
    assert rows["random"].median_s == {0.01: 300.0, 0.05: 20.0}
    assert rows["fast"].median_s[0.01] == math.inf and rows["fast"].unreached == {0.01: 2, 0.05: 0}
    assert rows["fast"].speedup == {0.01: 0.0, 0.05: 2.0}
    # Bootstrap intervals as `hpo simulate` gives them: random against itself is exactly 1x, and a
    # method's interval holds its own speedup.
    assert rows["random"].speedup_ci == {0.01: (1.0, 1.0), 0.05: (1.0, 1.0)}
    low, high = rows["fast"].speedup_ci[0.05]
    assert low < 2.0 < high


def test_a_lead_over_another_method_has_an_interval_that_tells_noise_from_a_real_lead():
    runs = {"default": [{0.01: t, 0.05: t} for t in (100.0, 200.0, 300.0, 400.0, 500.0)],
            "twice": [{0.01: t / 2, 0.05: t / 2} for t in (100.0, 200.0, 300.0, 400.0, 500.0)],
            "shuffled": [{0.01: t, 0.05: None} for t in (500.0, 100.0, 400.0, 200.0, 300.0)]}
    by = {r.method: r for r in leads(runs, "default")}
    assert set(by) == {"twice", "shuffled"}  # not the method itself
    assert by["twice"].ratio == {0.01: 2.0, 0.05: 2.0} and by["twice"].ci[0.01] == (2.0, 2.0)
    # The same times in another order: level, and the interval holds 1x on both sides.
    low, high = by["shuffled"].ci[0.01]
    assert by["shuffled"].ratio[0.01] == 1.0 and low < 1.0 < high
    assert by["shuffled"].ratio[0.05] == 0.0 and by["shuffled"].ci[0.05] == (0.0, 0.0)  # never got there


def test_the_command_prints_optuna_next_to_random_search_and_asha(tmp_path):
    path = tmp_path / "ranked.json"
    write_table(path, rows=30, epochs=9)
    out = subprocess.run([sys.executable, str(BENCH / "peers.py"), str(path), "--seeds", "2", "--peers", "optuna-tpe",
                          "--draws", "with-replacement", "--lead-over", "asha-promotion", "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(doc["results"]) == {"random", "asha-promotion", "optuna-tpe"}
    assert doc["results"]["random"]["speedup_top1"] == 1.0
    assert doc["results"]["random"]["speedup_top1_ci95"] == [1.0, 1.0]
    low, high = doc["results"]["asha-promotion"]["speedup_top5_ci95"]
    assert low <= doc["results"]["asha-promotion"]["speedup_top5"] <= high
    assert doc["lead_over"]["method"] == "asha-promotion"
    assert set(doc["lead_over"]["leads"]) == {"random", "optuna-tpe"}
    assert "lead over asha-promotion" in out.stdout
    assert doc["settings"]["workers"] == 8 and doc["settings"]["draws"] == "with-replacement"
