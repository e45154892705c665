"""bench/make_table.py: tables made by real training load into the simulator and can be made again."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

from hpo_operator.sim import LearningCurveTable, compare

from support.paths import BENCH, REPO

sys.path.insert(0, str(BENCH))
import make_table  # noqa: E402
from tablegen.space import SPACES, draw_configs  # noqa: E402
from tablegen.train import lr_factor  # noqa: E402

TINY = ["--dataset", "iris", "--model", "mlp", "--space", "mlp-schedule", "--configs", "3", "--epochs", "2",
        "--seed", "7", "--train-size", "100", "--val-size", "50"]


def make(out, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / "make_table.py"), *TINY, *extra, "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def test_a_tiny_table_loads_into_hpo_simulate_and_records_how_it_was_made(tmp_path):
    out = tmp_path / "iris_tiny.json"
    done = make(out)
    assert done.returncode == 0, done.stderr
    assert "epoch-1 vs final Spearman" in done.stdout
    table = LearningCurveTable.load(out)
    assert table.curves.shape == table.epoch_seconds.shape == (3, 2)
    assert ((table.curves >= 0) & (table.curves <= 1)).all() and (table.epoch_seconds > 0).all()
    doc = json.loads(out.read_text())
    assert doc["search_space"] == SPACES["mlp-schedule"]
    assert doc["generator"]["arguments"]["seed"] == 7 and "--seed 7" in doc["generator"]["command"]
    assert not (tmp_path / "iris_tiny.json.partial.jsonl").exists()
    sim = subprocess.run([sys.executable, "-m", "hpo_operator.cli.main", "simulate", str(out), "--seeds", "1",
                          "--workers", "2", "--max-trials", "6", "--scheduler", "asha-promotion", "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert sim.returncode == 0, sim.stderr
    assert set(json.loads(sim.stdout)["results"]) == {"random", "asha-promotion"}


def test_the_same_arguments_train_the_same_curves_and_a_cut_run_resumes(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert make_table.main([*TINY, "--out", str(first)]) == 0
    # A run cut after its first row: the partial file holds that row; the rerun trains only the rest.
    partial = second.with_name("b.json.partial.jsonl")
    doc = json.loads(first.read_text())
    arguments = dict(doc["generator"]["arguments"], out=str(second))
    partial.write_text(json.dumps({"arguments": arguments}) + "\n"
                       + json.dumps({"row": 0, "curve": doc["curves"][0], "seconds": [123.0, 123.0]}) + "\n")
    assert make_table.main([*TINY, "--out", str(second)]) == 0
    again = json.loads(second.read_text())
    assert again["configs"] == doc["configs"] and again["curves"] == doc["curves"]
    assert again["epoch_seconds"][0] == [123.0, 123.0]  # row 0 came from the partial file, not trained again


def test_a_partial_file_from_other_arguments_is_refused(tmp_path):
    out = tmp_path / "c.json"
    out.with_name("c.json.partial.jsonl").write_text(json.dumps({"arguments": {"seed": 1}}) + "\n")
    with pytest.raises(SystemExit, match="made with other arguments"):
        make_table.main([*TINY, "--out", str(out)])


def test_configurations_are_drawn_from_the_stated_space_with_the_seed():
    space = SPACES["cnn-schedule"]
    configs = draw_configs(space, 2000, seed=3)
    assert configs == draw_configs(space, 2000, seed=3) and configs != draw_configs(space, 2000, seed=4)
    for name, d in space.items():
        values = [c[name] for c in configs]
        if d["type"] == "choice":
            assert set(values) == set(d["values"])
            continue
        assert d["min"] <= min(values) and max(values) <= d["max"], name
        if d["type"] in ("randint", "lograndint"):
            assert all(isinstance(v, int) for v in values) and d["min"] in values, name
    # log scale: about half the learning rates below the geometric middle of the range
    lr = np.array([c["learning_rate"] for c in configs])
    middle = math.sqrt(space["learning_rate"]["min"] * space["learning_rate"]["max"])
    assert 0.4 < (lr < middle).mean() < 0.6


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_learning_rate_warms_up_linearly_then_holds_or_decays_to_zero(schedule):
    total, warmup = 100, 20
    factors = [lr_factor(s, total, warmup, schedule) for s in range(total)]
    assert factors[0] == pytest.approx(1 / warmup) and factors[warmup - 1] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(factors[:warmup - 1], factors[1:warmup]))
    if schedule == "constant":
        assert set(factors[warmup:]) == {1.0}
    else:
        assert factors[warmup] == pytest.approx(1.0) and factors[-1] < 0.01
        assert all(a >= b for a, b in zip(factors[warmup:], factors[warmup + 1:]))


def test_table_ranks_prints_each_tables_epoch_1_vs_final_rank_correlation():
    import table_ranks

    rising = np.arange(12, dtype=float)[:, None] * np.ones((1, 5))
    assert table_ranks.rank_correlation(rising, 1) == pytest.approx(1.0)
    crossing = rising.copy()
    crossing[:, 0] = -crossing[:, 0]  # epoch 1 ranks every row the other way round
    assert table_ranks.rank_correlation(crossing, 1) == pytest.approx(-1.0)
    out = subprocess.run([sys.executable, str(BENCH / "table_ranks.py"), str(BENCH / "tables" / "digits_s44.json")],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1].split()[:4] == ["digits_s44", "400", "81", "0.591"]


@pytest.mark.parametrize("mode", ["min", "max"])
def test_table_ranks_says_where_epoch_1_places_the_top_1_percent(mode):
    import table_ranks

    # 200 rows ranked the same at every epoch but the best final row, which epoch 1 puts 101st:
    # a high correlation over all rows, and still the top row found only halfway down at epoch 1.
    sign = 1.0 if mode == "min" else -1.0
    curves = sign * np.arange(200, dtype=float)[:, None] * np.ones((1, 3))
    curves[0, 0] = sign * 100.5
    table = LearningCurveTable(name="t", metric="m", mode=mode, configs=[{}] * 200, curves=curves,
                               epoch_seconds=np.ones((200, 3)))
    assert table_ranks.rank_correlation(curves, 1) > 0.9
    assert table_ranks.top_rows_epoch1_ranks(table) == [1, 101]  # top 1%: rows 1 and 0


def _script_tables() -> dict[str, str]:
    """make-tables.sh's table names and their make_table.py arguments."""
    text = (BENCH / "make-tables.sh").read_text()
    return {m.group(1): m.group(2) for m in re.finditer(r'^\s*\[(\w+)\]="([^"]+)"', text, re.M)}


def test_every_generated_table_in_the_repo_is_what_make_tables_sh_would_make():
    """The tuning/reported split (bench/tables/README.md) rests on these commands: each shipped generated
    table must come from its script line (same arguments), draw its rows from its space with its seed,
    and state the epoch-1 correlation its curves give."""
    scripted = _script_tables()
    tables = {p.stem: json.loads(p.read_text()) for p in (BENCH / "tables").glob("*.json")}
    shipped = {name: doc for name, doc in tables.items() if "generator" in doc}
    assert set(scripted) == set(shipped), "make-tables.sh and bench/tables/ disagree"
    for name, doc in shipped.items():
        args = make_table.parse_args([*scripted[name].split(), "--out", f"tables/{name}.json"])
        assert doc["generator"]["arguments"] == make_table._recorded_arguments(args), name
        assert doc["search_space"] == SPACES[args.space], name
        assert doc["configs"] == draw_configs(SPACES[args.space], args.configs, args.seed), name
        rho = make_table.epoch1_rank_correlation(np.array(doc["curves"]))
        assert doc["epoch1_final_spearman"] == pytest.approx(rho, abs=1e-4), name


def test_a_perfect_fidelity_twin_keeps_rows_and_times_and_lets_asha_find_what_early_epochs_hide():
    """bench/fidelity_bound.py's twin: the same final values and epoch times, every epoch ranking as the
    end does. 30 rows whose epoch-1 ranks are the final ranks reversed: ASHA from epoch 1 stops the best
    rows on the table, never on its twin."""
    import fidelity_bound

    rows, epochs = 30, 9
    final = np.linspace(0.1, 0.9, rows)
    curves = np.repeat(final[:, None], epochs, axis=1)
    curves[:, :3] = 1.0 - final[:, None]  # the first epochs rank every row the other way round
    table = LearningCurveTable(name="t", metric="m", mode="min", configs=[{"i": i} for i in range(rows)],
                               curves=curves, epoch_seconds=np.full((rows, epochs), 2.0))
    twin = fidelity_bound.perfect_fidelity(table)
    assert np.array_equal(twin.final_values(), table.final_values())
    assert np.array_equal(twin.epoch_seconds, table.epoch_seconds) and twin.configs == table.configs
    assert all(np.unique(twin.curves[r]).tolist() == [final[r]] for r in range(rows))

    def asha_top1(t):
        return compare(t, ["asha-promotion"], workers=2, seeds=3, epoch_scale=1, overhead=0,
                       draws="without-repeats")["asha-promotion"]

    assert asha_top1(table).unreached_top1 == 3  # the best row ranks last at epoch 1: always paused
    assert asha_top1(twin).unreached_top1 == 0


def test_fidelity_bound_prints_each_method_on_the_table_and_its_twin():
    out = subprocess.run([sys.executable, str(BENCH / "fidelity_bound.py"), str(BENCH / "tables" / "wine_s22.json"),
                          "--seeds", "2", "--methods", "asha-promotion", "--processes", "1"],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    rows = [line for line in out.splitlines() if line.startswith("wine_s22")]
    assert len(rows) == 2 and "as is" in rows[0] and "perfect" in rows[1]
    assert all(re.search(r"(\d+\.\d\dx|never) / (\d+\.\d\dx|never)$", row) for row in rows), out
