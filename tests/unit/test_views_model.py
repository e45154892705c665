"""The views' pure parts: snapshots from both backends' records, ranking, rungs, best so far, text, HTML, progress."""

from __future__ import annotations

import math
import re

from hpo_operator.local.progress import RunProgress, bar_line, plain_line
from hpo_operator.views.model import progress, ranked, rung_counts
from hpo_operator.views.read import parse_target
from hpo_operator.views.report import render, trials_table
from hpo_operator.views.snapshots import from_cluster, from_results, warnings_of
from hpo_operator.views.text import status_text

import pytest

SPEC = {"objective": {"metric": "val_error", "mode": "min"},
        "scheduler": {"algorithm": "asha", "minResource": 1, "maxResource": 9, "reductionFactor": 3},
        "budget": {"maxTrials": 4}}


def results_doc():
    """What `hpo run` writes: four trials, one trained to maxResource, one with a NaN epoch."""
    def trial(i, phase, obs, t0):
        return {"id": i, "name": f"x-{i:04d}", "config": {"lr": 0.1 * (i + 1), "act": "relu"}, "bracket": 0,
                "phase": phase, "until": obs[-1][0] if obs else 1, "attempts": 1, "failures": int(phase == "Failed"),
                "message": "trainer exited with code 3" if phase == "Failed" else "", "last_epoch": len(obs),
                "observations": obs, "times": [t0 + k for k in range(len(obs))], "checkpoint_dir": "/c"}
    return {
        "format": 1, "experiment": "x", "phase": "Succeeded", "reason": "MaxTrialsReached", "message": None,
        "elapsed_s": 30.0, "objective": {"metric": "val_error", "mode": "min"}, "started_at": 1000.0, "spec": SPEC,
        "counts": {}, "best": {"trial": "x-0001", "config": {"lr": 0.2, "act": "relu"}, "value": 0.1, "epoch": 9,
                               "complete": True, "checkpoint_dir": "/c"},
        "trials": [
            trial(0, "Paused", [[1, 0.5]], 1001.0),
            trial(1, "Completed", [[e, 0.5 - 0.05 * e] for e in range(1, 10)], 1002.0),
            trial(2, "Failed", [[1, None], [2, 0.45]], 1003.0),
            trial(3, "Stopped", [[1, 0.3], [2, 0.35], [3, 0.4]], 1001.5),
        ],
    }


def test_a_results_file_and_its_cluster_objects_give_the_same_snapshot():
    local = from_results(results_doc(), "local run x")
    experiment = {"metadata": {"name": "x", "namespace": "ns"}, "spec": SPEC,
                  "status": {"phase": "Succeeded", "reason": "MaxTrialsReached", "startTime": "1970-01-01T00:16:40Z",
                             "completionTime": "1970-01-01T00:17:10Z",
                             "best": {"trial": "x-0001", "config": {"lr": 0.2, "act": "relu"}, "value": 0.1,
                                      "epoch": 9, "complete": True, "checkpoint": "/c"}}}
    trials = [{"metadata": {"name": t["name"]}, "spec": {"trialId": t["id"], "config": t["config"], "bracket": 0},
               "status": {"phase": t["phase"], "until": t["until"], "attempts": 1, "failures": t["failures"],
                          "message": t["message"],
                          "observations": [{"epoch": e, "value": v, "time": tm, "attempt": 1}
                                           for (e, v), tm in zip(t["observations"], t["times"])]}}
              for t in reversed(results_doc()["trials"])]
    cluster = from_cluster(experiment, trials)
    assert cluster.trials == local.trials
    assert (cluster.best, cluster.phase, cluster.started_at, cluster.elapsed_s) == \
        (local.best, local.phase, local.started_at, local.elapsed_s)
    assert status_text(cluster).split("\n", 1)[1] == status_text(local).split("\n", 1)[1]


def test_trials_rank_by_latest_value_nan_last_and_rungs_count_who_went_on():
    s = from_results(results_doc(), "here")
    assert [t.name for t in ranked(s)] == ["x-0001", "x-0003", "x-0002", "x-0000"]
    doc = results_doc()
    doc["trials"][2]["observations"][-1][1] = None
    assert ranked(from_results(doc, "here"))[-1].name == "x-0002"  # no value ranks after every value
    assert [(r.level, r.reached, r.went_on) for r in rung_counts(s)] == [(1, 4, 3), (3, 2, 1), (9, 1, 0)]


def test_best_so_far_follows_the_times_epochs_were_written():
    p = progress(from_results(results_doc(), "here"))
    assert p.seconds[0] == 1.0 and p.epochs == list(range(1, 16))
    assert p.best_any[:3] == [0.5, 0.3, 0.3]  # x-0003's first epoch at 1001.5 beats x-0000's
    assert min(v for v in p.best_any if v is not None) == pytest.approx(0.05)
    assert p.best_full[-1] == pytest.approx(0.05) and p.best_full[0] is None
    doc = results_doc()
    del doc["trials"][0]["times"]  # written before times were recorded
    assert progress(from_results(doc, "here")) is None


def test_status_text_names_phase_rungs_best_and_failures():
    text = status_text(from_results(results_doc(), "local run x"))
    assert text.startswith("experiment x (local run x): Succeeded (MaxTrialsReached) after 30s")
    assert "trials: 4 of 4 (running 0, pending 0, paused 1, stopped 1, completed 1, failed 1)" in text
    assert "rungs: epoch 1: 4 reached, 3 went on | epoch 3: 2 reached, 1 went on | epoch 9 (max): 1 reached" in text
    assert "best: x-0001 val_error=0.1 at epoch 9" in text and "config: act=relu lr=0.2" in text
    assert "(trainer exited with code 3)" in text


def test_warnings_are_the_newest_of_the_experiments_objects():
    events = [{"type": "Warning", "involvedObject": {"kind": "HPOTrial", "name": "x-0001"}, "reason": "Crashed",
               "message": f"m{i}", "lastTimestamp": f"2026-01-01T00:00:{i:02d}Z", "count": 2} for i in range(12)]
    events += [{"type": "Warning", "involvedObject": {"kind": "Pod", "name": "other"}, "reason": "R", "message": "o",
                "lastTimestamp": "2026-01-01T00:01:00Z"},
               {"type": "Normal", "involvedObject": {"kind": "HPOExperiment", "name": "x"}, "reason": "N",
                "message": "n", "lastTimestamp": "2026-01-01T00:01:00Z"}]
    got = warnings_of(events, {"x", "x-0001"})
    assert [w.message for w in got] == [f"m{i}" for i in range(2, 12)]
    assert got[-1].object == "HPOTrial/x-0001" and got[-1].count == 2


def test_targets_cluster_or_local(tmp_path):
    assert parse_target("hpx/digits", namespace="ns").name == "digits"
    assert parse_target("hpoexperiments.hpo.dev/digits").name == "digits"
    assert parse_target(str(tmp_path)).run_dir == tmp_path
    assert parse_target(str(tmp_path / "results.json")).run_dir == tmp_path
    assert parse_target("digits", bare_name_is_cluster=True).name == "digits"
    with pytest.raises(ValueError, match="hpx/NAME"):
        parse_target("digits")
    with pytest.raises(ValueError, match="hpx/NAME"):
        parse_target("hpx/")


def test_report_escapes_what_users_wrote_and_loads_nothing_from_outside():
    doc = results_doc()
    doc["trials"][0]["config"]["act"] = "<script>alert(1)</script>"
    page = render(from_results(doc, "here"), [("curves", b"\x89PNG fake")])
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert re.findall(r'(?:src|href)="(?!data:)', page) == []
    assert "default-src 'none'" in page
    table = trials_table(from_results(doc, "here"))
    assert table.count("<tr") == 5 and 'data-sort=""' in table  # the NaN-only cell sorts as empty


def test_progress_bar_fits_the_terminal_and_plain_lines_have_no_control_characters():
    p = RunProgress("digits", 75.0, 6, 24, {"Running": 2, "Paused": 3, "Stopped": 1}, 31, "val_error", 0.0712,
                    "digits-0005", 3, False)
    bar = bar_line(p, 100)
    assert len(bar) <= 99 and bar.startswith("digits [") and "6/24 trials" in bar
    assert bar.count("#") == round(0.25 * 20) and "running 2 paused 3 stopped 1 |" in bar
    line = plain_line(p)
    assert line == ("[1:15] trials 6/24: running 2 paused 3 stopped 1 completed 0 failed 0 | 31 epochs | "
                    "best val_error=0.0712 (digits-0005 @ epoch 3, partial)")
    assert not any(ord(c) < 32 for c in line)
    timed = RunProgress("d", 900.0, 6, 24, {}, 0, "m", max_duration_s=1200.0)
    assert math.isclose(timed.fraction, 0.75)
