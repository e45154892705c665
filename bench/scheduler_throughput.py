"""Scheduler decisions per second as the number of recorded trials grows.

For each size N, a scheduler is first filled with N trials (random learning
curves, 64 workers), then timed over a window of further decisions
(``on_result`` plus the ``next_job`` that follows each finished run). The
window's rate is what an operator with N trials on record gets. Figures are
printed as decisions per second and as ratios against the 1k-trial run of
the same scheduler in this process (cost growth), and against FIFO at the
same size (the price of the ASHA bookkeeping).

    .venv/bin/python bench/scheduler_throughput.py [--sizes 1000 10000 100000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hpo_operator.scheduling import ASHA, FIFO, AsynchronousHyperband, Decision

WORKERS = 64
WINDOW = 20_000


def make(name: str, max_trials: int):
    if name == "fifo":
        return FIFO("min", 81, max_trials)
    if name == "asha-promotion":
        return ASHA("min", 1, 81, 3, max_trials=max_trials)
    if name == "asha-stopping":
        return ASHA("min", 1, 81, 3, type="stopping", max_trials=max_trials)
    if name == "hyperband":
        return AsynchronousHyperband("min", 1, 81, 3, brackets=4, max_trials=max_trials)
    raise ValueError(name)


def drive(s, rng, decisions_limit: int | None, state: dict) -> int:
    """Feed results until ``decisions_limit`` decisions (or until no work); returns decisions made."""
    running, epoch_of, quality = state["running"], state["epoch"], state["quality"]
    made = 0
    while running and (decisions_limit is None or made < decisions_limit):
        tid = running[int(rng.integers(len(running)))]
        epoch = epoch_of.get(tid, 0) + 1
        epoch_of[tid] = epoch
        q = quality.setdefault(tid, rng.random())
        d = s.on_result(tid, epoch, q + 1.0 / epoch)
        made += 1
        if d is Decision.CONTINUE and epoch < s.until_of(tid):
            continue
        running.remove(tid)
        if epoch >= 81:
            s.on_trial_end(tid, "completed")
        job = s.next_job()
        made += 1
        if job is not None:
            running.append(job.trial_id)
    return made


def measure(name: str, n: int, seed: int = 0) -> tuple[float, int]:
    rng = np.random.default_rng(seed)
    s = make(name, n)
    state = {"running": [], "epoch": {}, "quality": {}}
    for _ in range(WORKERS):
        job = s.next_job()
        state["running"].append(job.trial_id)
    drive(s, rng, None, state)  # fill: until the budget of n trials is used and no work is left
    s.max_trials = n + 10 * WINDOW  # reopen the budget and time decisions at this size
    while len(state["running"]) < WORKERS:
        state["running"].append(s.next_job().trial_id)
    start = time.perf_counter()
    made = drive(s, rng, WINDOW, state)
    elapsed = time.perf_counter() - start
    return made / elapsed, len(s.trials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--schedulers", nargs="+", default=["fifo", "asha-promotion", "asha-stopping", "hyperband"])
    args = parser.parse_args()
    rates: dict[tuple[str, int], float] = {}
    print(f"{'scheduler':16s} {'trials':>8s} {'decisions/s':>12s} {'vs 1k':>7s} {'vs fifo':>8s}")
    for n in args.sizes:
        for name in args.schedulers:
            rate, trials = measure(name, n)
            rates[(name, n)] = rate
            base = rates.get((name, args.sizes[0]), rate)
            fifo = rates.get(("fifo", n))
            print(f"{name:16s} {trials:8d} {rate:12,.0f} {rate / base:6.2f}x "
                  f"{'' if fifo is None else f'{rate / fifo:7.2f}x'}", flush=True)
    target = rates.get(("asha-promotion", 10_000))
    if target is not None:
        print(f"target: >= 50,000 decisions/s for asha-promotion at 10k trials: {target:,.0f} "
              f"({'met' if target >= 50_000 else 'NOT met'})")


if __name__ == "__main__":
    main()
