"""Scheduler decisions per second as the number of recorded trials grows.

For each size N, a scheduler is first filled with N trials (random learning
curves, 64 workers), then timed over a window of further decisions
(``on_result`` plus the ``next_job`` that follows each finished run). The
window's rate is what an operator with N trials on record gets. Figures are
printed as decisions per second and as ratios against the 1k-trial run of
the same scheduler in this process (cost growth), and against FIFO at the
same size (the price of the ASHA bookkeeping).

Then the model-based searchers: for each number of observations (100, 1,000,
10,000, spread over the rungs 1, 3, 9, 27, 81 as ASHA spreads them), the
median time of one suggestion, model fit included (each suggestion follows a
new observation and fits on what is on record, with the other running trials
pending; no random share, so every one is the model's pick; every result
carries an epoch time, so the gp refits its cost model too), on an
8-parameter space like the digits table's; against random search's
suggestion in this process. Where the kde (its adaptive recipe) has no model yet (its
lower rungs are fitted on only once they agree with the top, which holds
one trial at 100 observations), the line says so instead of timing a
random draw.

    .venv/bin/python bench/scheduler_throughput.py [--sizes 1000 10000 100000] [--observations 100 1000 10000]
    .venv/bin/python bench/scheduler_throughput.py --sizes  # the searcher section alone
"""

from __future__ import annotations

import argparse
import functools
import math
import time

import numpy as np

from pydantic import TypeAdapter

from hpo_operator.scheduling import ASHA, FIFO, AsynchronousHyperband, Decision, TrustedRungs
from hpo_operator.search import DensityRatioSearcher, LearningCurveGPSearcher, RandomSearcher
from hpo_operator.search.kde import BOHB
from hpo_operator.search.features import SpaceCandidates
from hpo_operator.spec.search_space import Domain

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
    if name == "adaptive-promotion":
        return TrustedRungs("min", 1, 81, 3, max_trials=max_trials)
    raise ValueError(name)


SPACE = {name: TypeAdapter(Domain).validate_python(d) for name, d in {
    "learning_rate": {"type": "loguniform", "min": 1e-4, "max": 1.0},
    "batch_size": {"type": "lograndint", "min": 8, "max": 256},
    "momentum": {"type": "uniform", "min": 0.0, "max": 0.99},
    "activation": {"type": "choice", "values": ["tanh", "relu"]},
    "n_units": {"type": "lograndint", "min": 16, "max": 512},
    "n_layers": {"type": "randint", "min": 1, "max": 4},
    "weight_decay": {"type": "loguniform", "min": 1e-8, "max": 1e-1},
    "dropout": {"type": "uniform", "min": 0.0, "max": 0.6},
}.items()}
LEVELS = [1, 3, 9, 27, 81]


def filled_searcher(cls, observations: int, seed: int = 0):
    """A searcher holding ``observations`` results: trials at rung k number a third of those at k-1."""
    rng = np.random.default_rng(seed)
    # No random share: every timed suggestion is the model's pick, fit included (with the default 0.2,
    # the seeded random draws among 15 suggestions pulled the median down).
    searcher = (cls(SpaceCandidates(SPACE), LEVELS, seed=seed, random_fraction=0.0) if cls is not RandomSearcher
                else cls(SPACE, seed))
    trials = int(observations / sum(3.0 ** -k for k in range(len(LEVELS))))
    records = []
    for tid in range(trials):
        config = RandomSearcher(SPACE, seed).suggest(tid)
        lr = np.log10(config["learning_rate"])
        reached = LEVELS[: 1 + sum(tid % 3 ** k == 0 for k in range(1, len(LEVELS)))]
        seconds = epoch_seconds_of(config, rng)
        records.append((tid, config, [(r, (lr + 2) ** 2 + 1.0 / r + 0.05 * rng.random(), seconds) for r in reached]))
    searcher.restore(records)
    return searcher, trials


def epoch_seconds_of(config, rng) -> float:
    """An epoch's time, set by the model's size and batch (the gp fits its cost model on these)."""
    return 1e-3 * config["n_units"] * config["n_layers"] / config["batch_size"] * (1 + 0.1 * rng.random())


def suggest_ms(cls, observations: int, repeats: int = 15) -> float:
    """Median time of a suggestion made as a worker frees up: the oldest of 8 running trials has
    just reported at the first rung and stopped (so the records changed and the model refits), and
    the other 7 are pending."""
    searcher, trials = filled_searcher(cls, observations)
    if getattr(searcher, "fit_level", lambda: 0)() is None:
        return math.nan  # no model yet: the kde's adaptive recipe fits a lower rung only once it agrees with the top
    rng = np.random.default_rng(1)
    running = list(range(trials, trials + 8))
    configs = {tid: searcher.suggest(tid, pending=[t for t in running if t < tid]) for tid in running}
    times = []
    for i in range(repeats):
        done = running.pop(0)
        # The rung result with an epoch time, so the gp refits its cost model as well as its GP.
        searcher.on_result(done, LEVELS[0], float(rng.random()), epoch_seconds_of(configs[done], rng))
        tid = trials + 8 + i
        start = time.perf_counter()
        configs[tid] = searcher.suggest(tid, pending=list(running))
        times.append(time.perf_counter() - start)
        running.append(tid)
    return float(np.median(times)) * 1000


# The kde runs one recipe under the default scheduler and BOHB's under ASHA (search/kde.py).
TIMED_SEARCHERS = (("kde", DensityRatioSearcher),
                   ("kde under asha", functools.partial(DensityRatioSearcher, recipe=BOHB)),
                   ("gp", LearningCurveGPSearcher))


def searcher_costs(sizes: list[int]) -> None:
    print(f"\n{'searcher':16s} {'observations':>12s} {'suggest+fit ms':>15s} {'vs random':>10s}")
    results = {}
    for n in sizes:
        base = suggest_ms(RandomSearcher, n, repeats=50)
        for name, cls in TIMED_SEARCHERS:
            ms = suggest_ms(cls, n)
            results[(name, n)] = ms
            if math.isnan(ms):
                print(f"{name:16s} {n:12,d}    random draws (no rung yet agrees with the top)", flush=True)
                continue
            print(f"{name:16s} {n:12,d} {ms:15.1f} {ms / base:9.0f}x", flush=True)
    for name, _ in TIMED_SEARCHERS:
        ms = results.get((name, 1000))
        if ms is not None:
            print(f"target: suggestion at 1,000 observations <= 50 ms (median): {name} {ms:.1f} ms "
                  f"({'met' if ms <= 50 else 'NOT met'})")


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
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10_000, 100_000],
                        help="scheduler throughput at these numbers of trials (none: skip)")
    parser.add_argument("--schedulers", nargs="+",
                        default=["fifo", "asha-promotion", "asha-stopping", "hyperband", "adaptive-promotion"])
    parser.add_argument("--observations", type=int, nargs="*", default=[100, 1000, 10_000],
                        help="searcher costs at these numbers of observations (none: skip)")
    args = parser.parse_args()
    rates: dict[tuple[str, int], float] = {}
    if args.sizes:
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
    if args.observations:
        searcher_costs(args.observations)


if __name__ == "__main__":
    main()
