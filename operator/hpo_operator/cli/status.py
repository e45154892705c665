"""``hpo status``: phase, counts, rungs, best trial, trials by objective and recent warnings, for a local run or
a cluster experiment; ``--watch`` redraws it until the experiment ends."""

from __future__ import annotations

import argparse
import sys
import time

from hpo_operator.cli.target import add_target_args, target_of
from hpo_operator.views.read import reader
from hpo_operator.views.text import status_text


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show an experiment's progress and trials (local run or hpx/NAME)",
                       description="Shows the phase, trial counts, rungs, the best trial and its configuration, "
                       "the trials by objective and, on a cluster, the recent Warning Events of the experiment "
                       "and its trials.")
    add_target_args(p)
    p.add_argument("--trials", action="store_true", help="list every trial (default: the best 10)")
    p.add_argument("--watch", "-w", action="store_true", help="redraw until the experiment ends (Ctrl-C stops)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between redraws with --watch (default 2)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, out=None) -> int:
    out = out or sys.stdout
    target = target_of(args)
    if args.interval <= 0:
        raise ValueError(f"--interval must be > 0 seconds (got {args.interval:g})")
    source = reader(target)
    tty = out.isatty()
    shown = None
    try:
        while True:
            snapshot = source.snapshot(with_events=True)
            text = status_text(snapshot, None if args.trials else 10)
            if not target.on_cluster:
                text += f"\n\nresults: {target.run_dir / 'results.json'}"
            if text != shown:
                if args.watch and tty:
                    out.write("\033[H\033[2J")  # a screen of its own, as watch(1) draws it
                elif args.watch and shown is not None:
                    out.write(f"\n--- {time.strftime('%H:%M:%S')}\n")
                out.write(text + "\n")
                out.flush()
                shown = text
            if not args.watch or snapshot.finished:
                return 0
            time.sleep(args.interval)
    finally:
        source.close()
