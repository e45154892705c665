"""How well early epochs rank a table's configurations: Spearman correlation of the validation
error after epoch 1 (and 3, 9) with the final one, per table.

    .venv/bin/python bench/table_ranks.py bench/tables/*.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from hpo_operator.sim import LearningCurveTable

EPOCHS = (1, 3, 9)


def rank_correlation(curves: np.ndarray, epoch: int) -> float:
    """Spearman correlation of the values after ``epoch`` with the final values (nan if constant)."""
    return float(spearmanr(curves[:, epoch - 1], curves[:, -1]).statistic)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tables", nargs="+", type=Path)
    args = p.parse_args(argv)
    print(f"{'table':28s} {'rows':>5s} {'epochs':>6s} " + " ".join(f"{'rho e' + str(e):>7s}" for e in EPOCHS)
          + f" {'best final':>10s} {'s/epoch':>8s}")
    for path in args.tables:
        t = LearningCurveTable.load(path)
        rhos = " ".join(f"{rank_correlation(t.curves, e):7.3f}" if e < t.max_resource else f"{'-':>7s}"
                        for e in EPOCHS)
        print(f"{path.stem:28s} {t.n_rows:5d} {t.max_resource:6d} {rhos} {t.final_values().min():10.4f} "
              f"{t.epoch_seconds.mean():8.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
