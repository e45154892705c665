"""``hpo simulate``: schedulers against random search on a learning-curve table."""

from __future__ import annotations

import argparse
import json
import sys
import time

from hpo_operator.scheduling.factory import SCHEDULER_NAMES
from hpo_operator.search import MODEL_SEARCHERS
from hpo_operator.sim import RANDOM, LearningCurveTable, compare
from hpo_operator.sim.compare import DEFAULT, resolve_draws
from hpo_operator.spec.experiment import SchedulerSpec

DEFAULT_SCHEDULERS = ["asha-promotion", "asha-stopping", "hyperband-promotion", "sha", "median"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="compare schedulers with random search on a learning-curve table",
        description="Runs each method and random search on the same configuration draws with a simulated "
        "clock, and prints the median time (over seeds) until the best fully trained trial is in the table's "
        "top 1% and top 5%, the speedup over random search, and bootstrap 95% intervals.",
    )
    p.add_argument("table", help="learning-curve table (JSON; format in bench/tables/README.md)")
    p.add_argument("--scheduler", action="append", type=_method,
                   help=f"method to compare (repeatable): '{DEFAULT}' (what a manifest naming only maxResource "
                   f"gets), a scheduler ({', '.join(n for n in SCHEDULER_NAMES if n != 'fifo')}) over random draws, "
                   f"or SCHEDULER+SEARCHER with a model-based searcher ({', '.join(MODEL_SEARCHERS)}), e.g. "
                   f"fifo+kde; default: {', '.join(DEFAULT_SCHEDULERS)}")
    p.add_argument("--draws", choices=["auto", "with-replacement", "without-repeats"], default="auto",
                   help="how every method draws table rows: with replacement (the table stands for an unbounded "
                   "space) or each row at most once, as model-based searchers pick them; auto: without repeats "
                   "when a model-based searcher is compared (default)")
    p.add_argument("--workers", type=int, default=8, help="trials running at once (default 8)")
    p.add_argument("--seeds", type=int, default=50, help="seeds; medians are taken over them (default 50)")
    p.add_argument("--epoch-scale", type=float, default=1000.0,
                   help="multiply the table's epoch times by this (default 1000: epochs of about a minute)")
    p.add_argument("--overhead", type=float, default=10.0, help="seconds per run start: pod start + checkpoint load")
    p.add_argument("--min-resource", type=int, default=1, help="epochs of the first rung (grace period)")
    p.add_argument("--max-resource", type=int, default=None, help="epochs of a full trial (default: the table's)")
    p.add_argument("--reduction-factor", type=float, default=3.0, help="eta (default 3)")
    p.add_argument("--brackets", type=int, default=3, help="hyperband brackets (default 3)")
    p.add_argument("--max-trials", type=int, default=1000, help="trial budget per run (default 1000)")
    p.add_argument("--max-time", type=float, default=None, help="simulated seconds per run (default: no limit)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--traces", metavar="FILE", help="also write each run's best fully trained value over "
                   "simulated time to FILE (JSON), for `hpo plot FILE`")
    p.set_defaults(func=run)


def _method(name: str) -> str:
    scheduler, _, searcher = name.partition("+")
    if name == DEFAULT or (scheduler in SCHEDULER_NAMES and (not searcher or searcher in MODEL_SEARCHERS)):
        return name
    raise argparse.ArgumentTypeError(
        f"unknown method {name!r}: use {DEFAULT}, a scheduler ({', '.join(SCHEDULER_NAMES)}) or "
        f"SCHEDULER+SEARCHER with a searcher from {', '.join(MODEL_SEARCHERS)}")


def _interval(ci, scale=1.0, unit="") -> str:
    lo, hi = ci
    f = lambda v: "inf" if v is None else f"{v / scale:.2f}{unit}"  # noqa: E731
    return f"[{f(lo)}, {f(hi)}]"


def run(args: argparse.Namespace) -> int:
    table = LearningCurveTable.load(args.table)
    schedulers = args.scheduler or DEFAULT_SCHEDULERS
    started = time.perf_counter()
    results = compare(table, schedulers, workers=args.workers, seeds=args.seeds, epoch_scale=args.epoch_scale,
                      overhead=args.overhead, min_resource=args.min_resource, max_resource=args.max_resource,
                      reduction_factor=args.reduction_factor, brackets=args.brackets, max_trials=args.max_trials,
                      max_time=args.max_time, draws=args.draws)
    base = SchedulerSpec(min_resource=args.min_resource, max_resource=args.max_resource or table.max_resource)
    draws = resolve_draws(args.draws, list(results), base)
    elapsed = time.perf_counter() - started
    trials = sum(r.trials for s in results.values() for r in s.runs)
    if args.traces:
        write_traces(args.traces, table, results, args)
    if args.json:
        doc = {
            "table": table.name,
            "settings": {"workers": args.workers, "seeds": args.seeds, "epoch_scale": args.epoch_scale,
                         "overhead": args.overhead, "min_resource": args.min_resource,
                         "reduction_factor": args.reduction_factor, "max_trials": args.max_trials, "draws": draws},
            "results": {
                name: {"top1_median_s": s.top1_median_s, "top5_median_s": s.top5_median_s,
                       "speedup_top1": s.speedup_top1, "speedup_top5": s.speedup_top5,
                       "seeds_unreached_top1": s.unreached_top1, "seeds_unreached_top5": s.unreached_top5,
                       "top1_ci95_s": list(s.top1_ci_s), "top5_ci95_s": list(s.top5_ci_s),
                       "speedup_top1_ci95": list(s.speedup_top1_ci), "speedup_top5_ci95": list(s.speedup_top5_ci)}
                for name, s in results.items()
            },
        }
        json.dump(doc, sys.stdout, indent=2)
        print()
        return 0
    fmt = lambda v: "never" if v is None else f"{v / 3600:8.2f}h"  # noqa: E731
    spd = lambda v: "    -" if v is None else f"{v:5.2f}x"  # noqa: E731
    print(f"table {table.name}: {table.n_rows} configurations, {table.max_resource} epochs; "
          f"{args.workers} workers, {args.seeds} seeds, epoch scale {args.epoch_scale:g}, overhead {args.overhead:g}s, "
          f"minResource {args.min_resource}, eta {args.reduction_factor:g}; draws {draws}")
    print(f"{'method':26s} {'top 1% (median)':>16s} {'speedup':>8s} {'95% interval':>16s} "
          f"{'top 5% (median)':>16s} {'speedup':>8s} {'95% interval':>16s}")
    for name, s in results.items():
        print(f"{name:26s} {fmt(s.top1_median_s):>16s} {spd(s.speedup_top1):>8s} {_interval(s.speedup_top1_ci):>16s} "
              f"{fmt(s.top5_median_s):>16s} {spd(s.speedup_top5):>8s} {_interval(s.speedup_top5_ci):>16s}")
        for label, n in (("top 1%", s.unreached_top1), ("top 5%", s.unreached_top5)):
            if n:
                print(f"{'':26s} note: {n} of {args.seeds} seeds never reached the {label} within "
                      f"{args.max_trials} trials" + (f" / {args.max_time:g}s" if args.max_time else ""))
    print(f"simulated {trials} trials in {elapsed:.1f}s ({trials / max(elapsed, 1e-9):.0f} trials/s); "
          f"'{RANDOM}' is random search: every trial trained to the end")
    return 0


TRACES_FORMAT = "hpo-simulate-traces/1"


def write_traces(path: str, table: LearningCurveTable, results: dict, args: argparse.Namespace) -> None:
    """Per scheduler and seed: (simulated seconds, value) each time a better trial was fully trained. A run
    stops once it reached the table's top 1% and 5%, or its budget; ``end_time`` says when."""
    doc = {
        "format": TRACES_FORMAT, "table": table.name, "metric": table.metric, "mode": table.mode,
        "thresholds": {"top1": table.top_threshold(0.01), "top5": table.top_threshold(0.05)},
        "settings": {"workers": args.workers, "seeds": args.seeds, "epoch_scale": args.epoch_scale,
                     "overhead": args.overhead, "min_resource": args.min_resource,
                     "reduction_factor": args.reduction_factor, "max_trials": args.max_trials},
        "schedulers": {name: [{"seed": r.seed, "end_time": r.end_time, "best": [list(p) for p in r.incumbent]}
                              for r in s.runs] for name, s in results.items()},
    }
    with open(path, "w") as f:
        json.dump(doc, f)
