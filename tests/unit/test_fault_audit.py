"""The fault audit (tests/support/faults.py) on records made by hand: what it must flag and what it must not.

The reliability report and tests/integration/test_faults.py are only as strict as this audit; here each rule
is held to a case it must catch, without a cluster.
"""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace

from support.faults import Experiment, audit, unsound_end
from support.node_double import Run

# Rungs at epoch 1, complete at 3: the smallest experiment with a rung.
SMALL = dict(min_resource=1, max_resource=3, max_retries=1)


def value(trial: str, epoch: int) -> float:
    return round(1.0 / (epoch + 1) + (0.01 if trial.endswith("1") else 0.0), 6)


def run(tmp_path, trial: str, attempt: int, start: int, until: int, reported: list[int], ended="exit 0",
        sidecar_killed=False) -> Run:
    metrics = tmp_path / f"{trial}-{attempt}.jsonl"
    metrics.write_text("".join(json.dumps({"epoch": e, "val_error": value(trial, e)}) + "\n" for e in reported))
    r = Run(f"{trial}-{attempt}", None, None, metrics, trial=trial, attempt=attempt, start_epoch=start, until=until,
            ended=ended, sidecar_killed=sidecar_killed)
    r.exit_code = int(ended.split()[1]) if ended.startswith("exit") else None
    return r


def trial(name: str, trial_id: int, phase: str, recorded: dict[int, int], failures=0) -> dict:
    """``recorded``: epoch -> the attempt that recorded it."""
    observations = [{"epoch": e, "value": value(name, e), "attempt": a} for e, a in sorted(recorded.items())]
    return {"metadata": {"name": name}, "spec": {"trialId": trial_id, "config": {"row": trial_id}},
            "status": {"phase": phase, "observations": observations, "failures": failures}}


def experiment_object(trials: list[dict], best: str, phase="Succeeded") -> dict:
    counts = Counter(t["status"]["phase"].lower() for t in trials)
    return {"metadata": {"name": "x"}, "spec": {"objective": {"mode": "min"}},
            "status": {"phase": phase, "best": {"trial": best}, "trials": {"created": len(trials), **counts}}}


def node(runs: list[Run], lost_pods=()) -> SimpleNamespace:
    return SimpleNamespace(history=runs, created=Counter(r.pod for r in runs), lost_pods=list(lost_pods))


def parallel_case(tmp_path, t1_phase="Stopped"):
    """x-0 trained to the end in two runs; x-1's first run was deleted with its pod and retried."""
    runs = [run(tmp_path, "x-0", 1, 0, 1, [1]), run(tmp_path, "x-0", 2, 1, 3, [2, 3]),
            run(tmp_path, "x-1", 1, 0, 1, [1], ended="deleted", sidecar_killed=True),
            run(tmp_path, "x-1", 2, 0, 1, [1])]
    trials = [trial("x-0", 0, "Completed", {1: 1, 2: 2, 3: 2}), trial("x-1", 1, t1_phase, {1: 2}, failures=1)]
    return runs, trials


def test_a_clean_parallel_run_is_clean_and_its_decisions_are_not_compared(tmp_path):
    runs, trials = parallel_case(tmp_path)
    f = audit(experiment_object(trials, "x-0"), trials, node(runs), [], None,
              Experiment(trials=2, parallelism=2, **SMALL))
    assert f.clean and f.observations == 4 and f.expected_failures == 1, f
    assert not f.comparable and not f.compared and f.decisions_same is None and f.best_same is None


def test_a_duplicate_pod_and_a_miscounted_failure_are_flagged(tmp_path):
    runs, trials = parallel_case(tmp_path)
    trials[1]["status"]["failures"] = 0
    f = audit(experiment_object(trials, "x-0"), trials, node(runs + [runs[0]]), [], None,
              Experiment(trials=2, parallelism=2, **SMALL))
    assert f.duplicate_pods == ["x-0-1 started 2 times"]
    assert f.wrong_failures == ["x-1: status.failures=0, faults that ended a run early=1"]
    assert not f.clean


def test_epochs_gone_with_a_killed_pod_are_excused_only_in_a_trial_out_of_retries(tmp_path):
    out_of_retries = [run(tmp_path, "x-1", a, 0, 1, [1], ended="lost", sidecar_killed=True) for a in (1, 2)]
    trials = [trial("x-1", 1, "Failed", {}, failures=2)]
    exp = Experiment(trials=1, parallelism=2, **SMALL)
    f = audit(experiment_object(trials, None), trials, node(out_of_retries), [], None, exp)
    assert f.died_with_pod == ["x-1 epoch 1"] and f.lost == [], f
    # A trial that went on: its retries had to train the epoch again and record it; the epoch is lost.
    went_on = [run(tmp_path, "x-1", 1, 0, 3, [1, 2], ended="lost", sidecar_killed=True),
               run(tmp_path, "x-1", 2, 2, 3, [3])]
    trials = [trial("x-1", 1, "Completed", {3: 2}, failures=1)]
    f = audit(experiment_object(trials, "x-1"), trials, node(went_on), [], None, exp)
    assert f.lost == ["x-1 epoch 1", "x-1 epoch 2"] and f.died_with_pod == [], f
    assert f.not_from_checkpoint and not f.clean
    # The sidecar alive (the trainer crashed): what it had read it must have sent, out of retries or not.
    crashed = [run(tmp_path, "x-1", a, 0, 1, [1], ended="exit 3") for a in (1, 2)]
    trials = [trial("x-1", 1, "Failed", {}, failures=2)]
    f = audit(experiment_object(trials, None), trials, node(crashed), [], None, exp)
    assert f.lost == ["x-1 epoch 1"] and f.died_with_pod == [], f


def test_an_unsound_end_is_flagged():
    exp = Experiment(trials=4, parallelism=2, **SMALL)
    trials = [trial("x-0", 0, "Completed", {1: 1, 2: 2, 3: 2}),
              trial("x-1", 1, "Stopped", {1: 1, 2: 1}),  # between rungs
              trial("x-2", 2, "Completed", {1: 1}),  # complete short of maxResource
              trial("x-3", 3, "Running", {1: 1})]
    assert unsound_end(experiment_object(trials, "x-0"), trials, exp) == [
        "x-1: Stopped at epoch 2, rungs and maxResource [1, 3]",
        "x-2: Completed at epoch 1, rungs and maxResource [1, 3]",
        "x-3: phase Running after the experiment ended"]
    sound = [trials[0], trial("x-1", 1, "Stopped", {1: 1}), trial("x-2", 2, "Failed", {1: 1, 2: 2})]
    assert unsound_end(experiment_object(sound, "x-0"), sound, Experiment(trials=3, **SMALL)) == []
    assert unsound_end(experiment_object(sound, "x-1", phase="Failed"), sound, exp) == [
        "experiment phase 'Failed', expected Succeeded: None", "3 trials created of 4",
        f"best trial x-1, the records' best fully trained trial x-0 (val_error={value('x-0', 3)})"]


def test_one_at_a_time_the_decisions_must_equal_the_undisturbed_runs(tmp_path):
    runs, trials = parallel_case(tmp_path)
    reference = SimpleNamespace(final={0: (0, "Completed", 3), 1: (1, "Completed", 3)})
    f = audit(experiment_object(trials, "x-0"), trials, node(runs), [], reference, Experiment(trials=2, **SMALL))
    assert f.comparable and f.compared and f.decisions_same is False and not f.clean, f
