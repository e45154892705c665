"""``hpo report``: one self-contained HTML page of an experiment (plots, outcome, sortable trials, spec)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from hpo_operator.cli.plot import matplotlib_or_explain
from hpo_operator.cli.target import add_target_args, target_of


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write an experiment's report: one HTML file that opens with no network",
                       description="Writes one HTML file with the plots of hpo plot, the outcome, a sortable "
                       "table of the trials (configuration, phase, epochs, last and best value, runs, failures), "
                       "recent warnings (on a cluster) and the experiment's spec. Everything is inside the file.")
    add_target_args(p)
    p.add_argument("--out", "-o", help="HTML file (default: <run folder>/report.html, or ./<name>-report.html)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plots = matplotlib_or_explain()
    from hpo_operator.views.read import read
    from hpo_operator.views.report import render

    target = target_of(args)
    snapshot = read(target, with_events=True)
    images = []
    for alt, fig in (("learning curves of every trial", plots.learning_curves(snapshot)),
                     ("best value so far against wall time and epochs", plots.best_so_far(snapshot))):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=130)
        images.append((alt, buf.getvalue()))
    path = Path(args.out) if args.out else (target.run_dir / "report.html" if target.run_dir
                                            else Path(f"{snapshot.name}-report.html"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(snapshot, images), encoding="utf-8")
    print(path)
    return 0
