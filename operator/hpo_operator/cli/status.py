"""``hpo status``: summarize a local run from its results file."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from hpo_operator.cli.run import print_summary
from hpo_operator.local.results import read_results


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show a local run's progress and trials (hpo-runs/<experiment>)")
    p.add_argument("run_dir", help="folder of the run, e.g. hpo-runs/digits-asha")
    p.add_argument("--trials", action="store_true", help="list every trial")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    doc = read_results(run_dir)
    print_summary(doc, run_dir)
    if args.trials:
        print(f"{'trial':24s} {'phase':10s} {'epoch':>5s} {'until':>5s} {'value':>10s} {'att':>3s}  message")
        for t in doc["trials"]:
            v = t["observations"][-1][1] if t["observations"] else None
            shown = "-" if v is None or not math.isfinite(v) else f"{v:.4g}"
            print(f"{t['name']:24s} {t['phase']:10s} {t['last_epoch']:5d} {t['until']:5d} {shown:>10s} "
                  f"{t['attempts']:3d}  {t['message']}")
    return 0
