"""``hpo plot``: learning curves and best-so-far plots of an experiment, or of ``hpo simulate --traces`` output."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hpo_operator.cli.target import add_target_args, target_of

FORMATS = ("png", "svg")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="plot an experiment's learning curves and best value so far (or simulate traces)",
                       description="Writes <name>-curves (every trial's objective against epoch: phase by colour, "
                       "rungs marked, the best in black) and <name>-progress (the best value so far against wall "
                       "time and against epochs trained). Given a file written by `hpo simulate --traces`, writes "
                       "<table>-simulate: each scheduler's best value so far over simulated time, median and spread "
                       "over seeds.")
    add_target_args(p)
    p.add_argument("--out", "-o", help="folder for the files (default: the run folder of a local run, else .)")
    p.add_argument("--format", nargs="+", choices=FORMATS, default=["png"], help="png, svg or both (default png)")
    p.set_defaults(func=run)


def matplotlib_or_explain():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError("hpo plot and hpo report need matplotlib: pip install 'hpo-operator[plot]'") from None
    from hpo_operator.views import plots
    return plots


def read_traces(path: Path) -> dict | None:
    """The document of `hpo simulate --traces`, or None when ``path`` is something else."""
    if not (path.is_file() and path.suffix == ".json" and path.name != "results.json"):
        return None
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err}); give a run folder, hpx/NAME or `hpo simulate --traces` output")
    from hpo_operator.cli.simulate import TRACES_FORMAT
    if not isinstance(doc, dict) or doc.get("format") != TRACES_FORMAT:
        raise ValueError(f"{path}: not a traces file of `hpo simulate --traces FILE` (format {TRACES_FORMAT}); "
                         f"the --json output holds medians only")
    return doc


def run(args: argparse.Namespace) -> int:
    plots = matplotlib_or_explain()
    traces = read_traces(Path(args.experiment))
    if traces is not None:
        out = Path(args.out or ".")
        figures = {f"{traces['table']}-simulate": plots.simulate_traces(traces)}
    else:
        from hpo_operator.views.read import read
        target = target_of(args)
        snapshot = read(target)
        out = Path(args.out or (target.run_dir if target.run_dir else "."))
        figures = {f"{snapshot.name}-curves": plots.learning_curves(snapshot),
                   f"{snapshot.name}-progress": plots.best_so_far(snapshot)}
    out.mkdir(parents=True, exist_ok=True)
    for stem, fig in figures.items():
        for fmt in args.format:
            path = out / f"{stem}.{fmt}"
            plots.save(fig, path)
            print(path)
    return 0
