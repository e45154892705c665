"""How well early epochs rank a table's configurations: Spearman correlation of the validation
error after epoch 1 (and 3, 9) with the final one, per table, and where epoch 1 places the
table's top 1% (a high correlation over all rows can still leave the best rows far down).

    .venv/bin/python bench/table_ranks.py bench/tables/*.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.stats import rankdata, spearmanr

from hpo_operator.sim import LearningCurveTable

EPOCHS = (1, 3, 9)


def rank_correlation(curves: np.ndarray, epoch: int) -> float:
    """Spearman correlation of the values after ``epoch`` with the final values (nan if constant)."""
    return float(spearmanr(curves[:, epoch - 1], curves[:, -1]).statistic)


def top_rows_epoch1_ranks(table: LearningCurveTable, fraction: float = 0.01) -> list[int]:
    """Epoch-1 ranks (1 = best, ties share the best rank) of the rows whose final value is in the top
    ``fraction``, the rows `hpo simulate`'s target asks for; sorted."""
    sign = 1.0 if table.mode == "min" else -1.0
    ranks = rankdata(sign * table.curves[:, 0], method="min")
    top = sign * table.final_values() <= sign * table.top_threshold(fraction)
    return sorted(int(r) for r in ranks[top])


def _short(ranks: list[int], shown: int = 5) -> str:
    head = ",".join(map(str, ranks[:shown]))
    return head if len(ranks) <= shown else f"{head},... ({len(ranks)} rows)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tables", nargs="+", type=Path)
    args = p.parse_args(argv)
    print(f"{'table':28s} {'rows':>5s} {'epochs':>6s} " + " ".join(f"{'rho e' + str(e):>7s}" for e in EPOCHS)
          + f" {'best final':>10s} {'s/epoch':>8s}  top 1% rows' epoch-1 ranks")
    for path in args.tables:
        t = LearningCurveTable.load(path)
        rhos = " ".join(f"{rank_correlation(t.curves, e):7.3f}" if e < t.max_resource else f"{'-':>7s}"
                        for e in EPOCHS)
        print(f"{path.stem:28s} {t.n_rows:5d} {t.max_resource:6d} {rhos} {t.final_values().min():10.4f} "
              f"{t.epoch_seconds.mean():8.4f}  {_short(top_rows_epoch1_ranks(t))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
