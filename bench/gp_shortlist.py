"""How close the GP searcher's shortlist of local-candidate centres comes to ranking every configuration.

In a continuous space the GP draws local candidates around the five
configurations it predicts best. It ranks a bounded shortlist (what the fit
saw, the running trials, the best observed at each rung) rather than every
configuration on record, which kept a suggestion at 10,000 observations
under 20 ms. For each number of observations (the records of
bench/scheduler_throughput.py's searcher section, one new observation before
each fit), this ranks every configuration by the same posterior mean and
prints how many fits chose the same five, and where the shortlist's five fall
in the ranking of all of them.

    .venv/bin/python bench/gp_shortlist.py [--observations 1000 10000] [--fits 20]
"""

from __future__ import annotations

import argparse

import numpy as np

from scheduler_throughput import LEVELS, filled_searcher

from hpo_operator.search import LearningCurveGPSearcher


def ranked(searcher: LearningCurveGPSearcher, model, ids: list[int]) -> list[int]:
    mu = model.predict_mean(searcher._inputs(ids, [searcher.max_level] * len(ids)))
    return [ids[i] for i in np.argsort(mu, kind="stable")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--observations", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--fits", type=int, default=20)
    args = parser.parse_args()
    print(f"{'observations':>12s} {'configs':>8s} {'shortlist':>10s} {'same 5':>8s} "
          f"{'5th in all: median':>19s} {'worst':>6s}")
    for n in args.observations:
        searcher, trials = filled_searcher(LearningCurveGPSearcher, n)
        rng = np.random.default_rng(1)
        running = list(range(trials, trials + 8))
        for tid in running:
            searcher.suggest(tid, pending=[t for t in running if t < tid])
        same, places = 0, []
        for i in range(args.fits):
            searcher.on_result(running.pop(0), LEVELS[0], float(rng.random()))
            model = searcher.fit(list(running))
            shortlist = searcher.local_centres(model)
            everyone = sorted(searcher.x)
            place = {t: k + 1 for k, t in enumerate(ranked(searcher, model, everyone))}
            chosen = ranked(searcher, model, shortlist)[:5]
            same += set(chosen) == {t for t, k in place.items() if k <= 5}
            places.append(max(place[t] for t in chosen))
            tid = trials + 8 + i
            searcher.suggest(tid, pending=list(running))
            running.append(tid)
        print(f"{n:12,d} {len(everyone):8,d} {len(shortlist):10,d} {same:4d}/{args.fits:<3d} "
              f"{int(np.median(places)):19d} {max(places):6d}", flush=True)


if __name__ == "__main__":
    main()
