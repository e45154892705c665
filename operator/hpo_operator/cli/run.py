"""``hpo run``: run an HPOExperiment manifest on this machine, trials as local processes."""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from pathlib import Path

from hpo_operator.local import LocalRunner
from hpo_operator.local.progress import RunProgress, bar_line, plain_line
from hpo_operator.resources import ExperimentPhase
from hpo_operator.spec import load_experiment


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run an experiment on this machine (trials as local processes)",
                       description="Runs the same HPOExperiment manifest a cluster takes, with trials as "
                       "subprocesses of the trainer command and checkpoints under OUT/<experiment>/.")
    p.add_argument("manifest", help="HPOExperiment YAML")
    p.add_argument("--out", default="hpo-runs", help="folder for runs (default ./hpo-runs)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run of this experiment")
    p.add_argument("--fresh", action="store_true", help="delete an earlier run of this experiment first")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    experiment = load_experiment(args.manifest)
    console = Console(sys.stderr, quiet=args.quiet)
    runner = LocalRunner(experiment, Path(args.manifest), Path(args.out), resume=args.resume, fresh=args.fresh,
                         progress=console.event, status=console.status)
    doc = runner.run()
    console.done()
    print_summary(doc, runner.run_dir)
    return {ExperimentPhase.SUCCEEDED: 0, ExperimentPhase.INTERRUPTED: 130}.get(doc["phase"], 1)


class Console:
    """Events one per line; a progress bar redrawn in place on a terminal, a plain status line every 15 s in a
    log (where carriage returns would pile up)."""

    # Seconds between plain status lines in a log; tests shorten it.
    LOG_INTERVAL = float(os.environ.get("HPO_PROGRESS_INTERVAL", "15"))

    def __init__(self, stream, quiet: bool = False):
        self.stream, self.quiet = stream, quiet
        self.tty = stream.isatty()
        self._last_status = 0.0
        self._drawn = False

    def event(self, line: str) -> None:
        if self.quiet:
            return
        self._clear()
        print(line, file=self.stream, flush=True)

    def status(self, progress: RunProgress) -> None:
        if self.quiet:
            return
        if self.tty:
            self._clear()
            self.stream.write(bar_line(progress, shutil.get_terminal_size().columns))
            self.stream.flush()
            self._drawn = True
        elif time.monotonic() - self._last_status >= self.LOG_INTERVAL:
            self._last_status = time.monotonic()
            print(plain_line(progress), file=self.stream, flush=True)

    def done(self) -> None:
        self._clear()

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\033[K")
            self._drawn = False


def print_summary(doc: dict, run_dir: Path) -> None:
    c = doc["counts"]
    print(f"experiment {doc['experiment']}: {doc['phase']}" + (f" ({doc['reason']})" if doc.get("reason") else "")
          + f" after {doc['elapsed_s']:.0f}s")
    print(f"trials: {len(doc['trials'])} (completed {c['Completed']}, stopped {c['Stopped']}, "
          f"paused {c['Paused']}, failed {c['Failed']})")
    best = doc.get("best")
    if best:
        value = best["value"]
        shown = "nan" if value is None or not math.isfinite(value) else f"{value:.6g}"
        print(f"best: {best['trial']} {doc['objective']['metric']}={shown} at epoch {best['epoch']}"
              + ("" if best["complete"] else " (not fully trained)"))
        print(f"  config: {best['config']}")
        print(f"  checkpoint: {best['checkpoint_dir']}")
    if doc.get("message"):
        print(f"message: {doc['message']}")
    print(f"results: {run_dir / 'results.json'}")
