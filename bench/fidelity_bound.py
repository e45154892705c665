"""How much sooner than random search could a method be if early epochs ranked perfectly?

Each table runs twice: as it is, and as its *perfect-fidelity twin*, the same rows and epoch
times with every epoch reporting the row's final value. On the twin a rung never throws away a
trial the end would have kept, so ASHA's speedup there is what stopping early can give on that
table under the protocol (8 workers, epoch scale 1000, 10 s per run start, rows without repeats);
a target above it needs the search, not the stopping. A method's gap to ASHA on the twin is the
price of what it does besides trusting early epochs (the default's: the probes it trains to the end
to measure whether it may). Speedup over random search in the same run, to the top 1% / top 5%:

    .venv/bin/python bench/fidelity_bound.py bench/tables/fashion_mlp_capacity_s6.json --seeds 50
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from hpo_operator.sim import LearningCurveTable, compare

METHODS = ("asha-promotion", "asha-promotion+kde", "default")
FIDELITIES = ("as is", "perfect")


def perfect_fidelity(table: LearningCurveTable) -> LearningCurveTable:
    """The table's twin whose every epoch reports the row's final value (epoch times unchanged)."""
    curves = np.repeat(table.final_values()[:, None], table.max_resource, axis=1)
    return dataclasses.replace(table, name=f"{table.name} (perfect fidelity)", curves=curves)


def speedups(path: Path, fidelity: str, methods: tuple[str, ...], seeds: int) -> dict[str, tuple]:
    table = LearningCurveTable.load(path)
    if fidelity == "perfect":
        table = perfect_fidelity(table)
    out = compare(table, list(methods), workers=8, seeds=seeds, epoch_scale=1000, overhead=10,
                  draws="without-repeats")
    return {m: (out[m].speedup_top1, out[m].speedup_top5) for m in methods}


def _x(speedup) -> str:
    return "never" if speedup is None else f"{speedup:.2f}x"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tables", nargs="+", type=Path)
    p.add_argument("--seeds", type=int, default=50)
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated `hpo simulate` scheduler names")
    p.add_argument("--processes", type=int, default=2, help="tables run side by side")
    args = p.parse_args(argv)
    methods = tuple(m for m in args.methods.split(",") if m)
    jobs = [(path, fidelity, methods, args.seeds) for path in args.tables for fidelity in FIDELITIES]
    with Pool(args.processes) as pool:
        results = pool.starmap(speedups, jobs, chunksize=1)
    print(f"speedup over random search to the top 1% / top 5%, {args.seeds} seeds, rows without repeats")
    print(f"{'table':28s} {'epochs rank':12s} " + " ".join(f"{m:>22s}" for m in methods))
    for (path, fidelity, _, _), result in zip(jobs, results):
        cells = " ".join(f"{_x(result[m][0]) + ' / ' + _x(result[m][1]):>22s}" for m in methods)
        print(f"{path.stem:28s} {fidelity:12s} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
