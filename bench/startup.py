"""How long a trial pod's two processes take to start: the trainer SDK's import and the sidecar's.

Each case is a whole new Python process (``python -c "<import>"``), timed
from outside: wall seconds, and CPU seconds (user + system of the child, from
the OS), which matter on a node where the trainer and the sidecar start at
the same moment on a few cores. With ``--before-tree DIR`` (a checkout of an
earlier commit) each case also runs against that tree's code, the two
alternating run by run, and the ratio now / before is the median of the
pairs' ratios. Both trees are put first on PYTHONPATH, so the same
interpreter and installed packages serve both.

    git worktree add /tmp/before <commit>     # or: git archive <commit> | tar -x -C /tmp/before
    .venv/bin/python bench/startup.py --before-tree /tmp/before [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CASES = {
    "interpreter alone": "pass",
    "trainer SDK": "import hpo_trainer",
    "sidecar": "import hpo_operator.sidecar.__main__",
}


def pythonpath(tree: Path) -> str:
    return os.pathsep.join(str(tree / part) for part in ("operator", "trainer_image"))


def run_once(code: str, tree: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `python -c code` with `tree` first on the path."""
    env = {**os.environ, "PYTHONPATH": pythonpath(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before-tree", type=Path, default=None,
                        help="a checkout of an earlier commit to compare with (its operator/ and trainer_image/)")
    parser.add_argument("--runs", type=int, default=15, help="runs of each case and tree (medians are printed)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.before_tree is not None and not (args.before_tree / "trainer_image" / "hpo_trainer").is_dir():
        parser.error(f"--before-tree {args.before_tree}: no trainer_image/hpo_trainer in it; give a checkout")
    trees = {"now": REPO}
    if args.before_tree is not None:
        trees["before"] = args.before_tree.resolve()

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; {args.runs} runs each, "
          f"trees alternating; medians")
    header = f"{'case':<20}{'tree':<8}{'wall s':>8}{'CPU s':>8}"
    if len(trees) > 1:
        header += f"{'wall now/before':>17}{'CPU now/before':>16}"
    print(header)
    for case, code in CASES.items():
        for tree in trees.values():
            run_once(code, tree)  # warm-up: the file cache
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
        for i in range(args.runs):
            order = list(trees.items()) if i % 2 == 0 else list(reversed(trees.items()))
            for name, tree in order:
                times[name].append(run_once(code, tree))
        for name in trees:
            wall = statistics.median(w for w, _ in times[name])
            cpu = statistics.median(c for _, c in times[name])
            line = f"{case:<20}{name:<8}{wall:>8.3f}{cpu:>8.3f}"
            if name == "now" and len(trees) > 1:
                wall_ratio = statistics.median(a[0] / b[0] for a, b in zip(times["now"], times["before"]))
                cpu_ratio = statistics.median(a[1] / b[1] for a, b in zip(times["now"], times["before"]))
                line += f"{wall_ratio:>16.2f}x{cpu_ratio:>15.2f}x"
            print(line)


if __name__ == "__main__":
    main()
