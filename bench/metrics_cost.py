"""What the operator's Prometheus metrics add to a step, at 1,000 running trials.

One experiment with 1,000 trials running (FIFO, so every observation is a
decision and none ends a run); each step feeds it one new observation per
trial, the busiest step the operator has. Steps alternate between the bare
``reconcile.step`` (its plan's tally included: that part cannot be switched
off) and the step plus what the owner adds for the metrics: the counts
before the step of the trials with observations waiting, and
``ExperimentMeter.decided``
with the trials counted by phase (the recount a status write triggers) and
one latency sample per trial. Prints the fastest and the median of each, and
their ratios: on a machine shared with other work the medians move by tens of
percent from run to run, the fastest (each side's cost with the least
interference) far less. The
watch handler's part (``Arrivals.note``, once per trial event, in the
trials' index function) is timed on its own, per event.

    .venv/bin/python bench/metrics_cost.py [--trials 1000] [--steps 60]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime, timedelta, timezone

from hpo_operator.controller import metrics
from hpo_operator.controller.reconcile import step
from hpo_operator.controller.state import ExperimentState
from hpo_operator.spec import experiment_spec_from_dict

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def experiment(trials: int):
    return experiment_spec_from_dict({
        "objective": {"metric": "val_error"},
        "searchSpace": {"lr": {"type": "loguniform", "min": 1e-4, "max": 1.0}},
        "searcher": {"algorithm": "random", "seed": 0},
        "scheduler": {"algorithm": "fifo", "maxResource": 10_000},
        "budget": {"maxTrials": trials, "parallelism": trials},
        "trialTemplate": {"spec": {"containers": [{"name": "trainer", "image": "trainer:1"}]}},
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    spec = experiment(args.trials)
    state = ExperimentState.from_trials("bench", spec, [])
    plan = step(state, spec, {}, {}, {}, T0, max_launches=args.trials)
    names = [launch.trial.name for launch in plan.launches]
    pods = {state.books[n].pod: {"status": {"phase": "Running"}} for n in names}
    observations = {n: [] for n in names}
    meter = metrics.ExperimentMeter("bench", "bench")
    key = ("bench", "bench")
    bare, metered, notes = [], [], []
    for i in range(2 * args.steps):
        for n in names:
            observations[n] = observations[n] + [(len(observations[n]) + 1, 0.5)]
        now = T0 + timedelta(seconds=i + 1)
        with_metrics = i % 2 == 1
        if with_metrics:
            noted = time.perf_counter()
            for n in names:  # (the watch handler, one call per trial event)
                metrics.ARRIVALS.note(key, n, len(observations[n]))
            notes.append((time.perf_counter() - noted) / len(names))
        started = time.perf_counter()
        if with_metrics:
            processed = meter.processed(state)
        plan = step(state, spec, {}, observations, pods, now)
        if with_metrics:
            meter.decided(plan, state, processed, recount=True)
        (metered if with_metrics else bare).append(time.perf_counter() - started)
        assert sum(plan.decisions.values()) == len(names)
    print(f"{args.trials} running trials, one observation each per step, {args.steps} steps each:")
    print("                      fastest    median")
    print(f"  step alone:        {min(bare) * 1000:6.2f} ms  {statistics.median(bare) * 1000:6.2f} ms")
    print(f"  step with metrics: {min(metered) * 1000:6.2f} ms  {statistics.median(metered) * 1000:6.2f} ms")
    print(f"  ratio:             {min(metered) / min(bare):6.3f}     {statistics.median(metered) / statistics.median(bare):6.3f}")
    print(f"watch handler: {min(notes) * 1e6:.2f} us per trial event (Arrivals.note), fastest step")


if __name__ == "__main__":
    main()
