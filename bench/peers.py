"""Reference HPO libraries next to the project's own methods, on the same tables, in one run.

Runs Syne Tune 0.13 (BOHB, MOBSTER, HyperTune and ASHA over random rows on HyperbandScheduler, promotion
type, in its simulator backend) and Optuna (multivariate TPE with
HyperbandPruner) under the protocol of ``hpo simulate`` (8 workers, 10 s per
run start, epoch times x1000, 1000 trials at most) and the project's methods
through hpo_operator.sim in the same process. Prints, per table and method,
the median over seeds of the simulated time until a fully trained trial is in
the table's top 1% and top 5% (a seed that never gets there counts as never,
and the median is "never" when most seeds did not), how many seeds never got
there, the ratio against random search in this run with its bootstrap 95%
interval (seeds resampled in pairs with random search's, as ``hpo simulate
--json`` does), and the wall seconds one simulated experiment cost here.

Every method draws in one regime (``--draws``): without repeats (each table
row at most once: Syne Tune's ``restrict_configurations`` with
``allow_duplicates=False``) or with replacement. Syne Tune needs its own
environment (bench/peers-setup.sh):

    bench/.venv-peers/bin/python bench/peers.py bench/tables/wine_s22.json --seeds 5

The GP searchers (MOBSTER, HyperTune) cost minutes per simulated experiment on
two cores; hence 5 seeds by default. ``--peers optuna-tpe`` runs without Syne
Tune (the project's .venv has Optuna).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from hpo_operator.sim import LearningCurveTable
from peerbench.optuna_run import run_optuna
from peerbench.project_run import run_project
from peerbench.protocol import Protocol, load_space
from peerbench.rows import DRAWS
from peerbench.summary import format_leads, format_rows, leads, summarise

SYNE_TUNE = {"syne-bohb": "bohb", "syne-mobster": "mobster", "syne-hypertune": "hypertune", "syne-asha": "asha"}
OPTUNA = "optuna-tpe"
PEERS = [*SYNE_TUNE, OPTUNA]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tables", nargs="+", type=Path, help="learning-curve tables with a search_space")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per method (default 5; GP peers are slow)")
    p.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, from {', '.join(PEERS)}")
    p.add_argument("--project", default="asha-promotion",
                   help="the project's methods as `hpo simulate` names them, comma-separated (random always runs)")
    p.add_argument("--draws", choices=DRAWS, default=DRAWS[0], help="one regime for every method")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--overhead", type=float, default=10.0, help="simulated seconds per run start")
    p.add_argument("--epoch-scale", type=float, default=1000.0)
    p.add_argument("--max-trials", type=int, default=1000)
    p.add_argument("--min-resource", type=int, default=1)
    p.add_argument("--reduction-factor", type=float, default=3.0)
    p.add_argument("--tick", type=float, default=1.0,
                   help="Syne Tune's simulated seconds between decisions while every worker is busy")
    p.add_argument("--lead-over", metavar="METHOD",
                   help="also print every other method's lead over METHOD (one of those run, e.g. default) "
                        "with its bootstrap 95%% interval: whether the seeds can tell the two apart")
    p.add_argument("--json", action="store_true", help="also print one JSON object per table")
    args = p.parse_args(argv)
    args.peers = [m for m in args.peers.split(",") if m]
    unknown = [m for m in args.peers if m not in PEERS]
    if unknown:
        p.error(f"--peers: unknown {unknown}; choose from {', '.join(PEERS)}")
    args.project = [m for m in args.project.split(",") if m and m != "random"]
    if args.seeds < 1:
        p.error("--seeds must be at least 1")
    if args.lead_over and args.lead_over not in ["random", *args.project, *args.peers]:
        p.error(f"--lead-over {args.lead_over}: not among the methods run; name one of --project or --peers")
    return args


def run_peer(name: str, table: LearningCurveTable, space: dict, protocol: Protocol, seed: int, tick: float):
    if name == OPTUNA:
        return run_optuna(table, space, protocol, seed)[0]
    from peerbench.synetune_run import run_synetune  # Syne Tune lives in bench/.venv-peers only

    return run_synetune(table, space, SYNE_TUNE[name], protocol, seed, tick=tick)[0]


def bench_table(path: Path, args: argparse.Namespace, protocol: Protocol) -> dict:
    table = LearningCurveTable.load(path)
    space = load_space(path)
    wall: dict[str, float] = {}
    started = time.perf_counter()
    runs = run_project(table, args.project, protocol, args.seeds)
    wall["project (all)"] = time.perf_counter() - started
    for name in args.peers:
        runs[name] = []
        started = time.perf_counter()
        for seed in range(args.seeds):
            runs[name].append(run_peer(name, table, space, protocol, seed, args.tick))
            print(f"  {table.name}: {name} seed {seed} done", file=sys.stderr, flush=True)
        wall[name] = time.perf_counter() - started
    rows = summarise(runs, "random", wall)
    print(f"table {table.name} ({path.name}): {table.n_rows} configurations x {table.max_resource} epochs; "
          f"{protocol.workers} workers, {protocol.overhead:g} s per run start, epoch scale "
          f"{protocol.epoch_scale:g}, minResource {protocol.min_resource}, eta {protocol.reduction_factor:g}, "
          f"seeds 0..{args.seeds - 1}, draws {protocol.draws}")
    print(format_rows(rows))
    print(f"(s/run: wall seconds per simulated experiment here; the project's methods together took "
          f"{wall['project (all)']:.1f} s)")
    lead_rows = leads(runs, args.lead_over) if args.lead_over else []
    if lead_rows:
        print(format_leads(lead_rows))
    doc = {"table": table.name, "file": path.name, "settings": vars(protocol) | {"seeds": args.seeds},
           "results": {r.method: {"top1_median_s": _finite(r.median_s[0.01]), "top5_median_s": _finite(r.median_s[0.05]),
                                  "speedup_top1": _finite(r.speedup[0.01]), "speedup_top5": _finite(r.speedup[0.05]),
                                  "speedup_top1_ci95": list(r.speedup_ci[0.01]), "speedup_top5_ci95": list(r.speedup_ci[0.05]),
                                  "seeds_unreached_top1": r.unreached[0.01], "seeds_unreached_top5": r.unreached[0.05],
                                  "seconds_per_run": r.seconds_per_run} for r in rows}}
    if args.lead_over:
        doc["lead_over"] = {"method": args.lead_over,
                            "leads": {r.method: {"top1": _finite(r.ratio[0.01]), "top1_ci95": list(r.ci[0.01]),
                                                 "top5": _finite(r.ratio[0.05]), "top5_ci95": list(r.ci[0.05])}
                                      for r in lead_rows}}
    if args.json:
        print(json.dumps(doc))
    return doc


def _finite(x):
    return None if x is None or math.isinf(x) else x


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    protocol = Protocol(workers=args.workers, overhead=args.overhead, epoch_scale=args.epoch_scale,
                        max_trials=args.max_trials, min_resource=args.min_resource,
                        reduction_factor=args.reduction_factor, draws=args.draws)
    for path in args.tables:
        bench_table(path, args, protocol)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
