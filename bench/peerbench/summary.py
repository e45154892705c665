"""Medians over seeds and ratios against random search, counting a seed that never reached a target
as infinitely slow (never dropped)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Optional

from hpo_operator.sim.compare import bootstrap_intervals
from peerbench.protocol import TARGETS

Interval = tuple[Optional[float], Optional[float]]  # None ends: never reached (low) or unbounded (high)


@dataclass(frozen=True)
class Row:
    method: str
    median_s: dict[float, float]  # target -> median simulated seconds (inf: most seeds never reached it)
    unreached: dict[float, int]
    seeds: int
    speedup: dict[float, Optional[float]]  # random's median / this median (None: both never)
    # Bootstrap 95% interval of the speedup, seeds resampled in pairs with random search's (as `hpo simulate`).
    speedup_ci: Optional[dict[float, Interval]] = None
    seconds_per_run: Optional[float] = None  # wall seconds per simulated experiment on this machine


def median_time(times: list[Optional[float]]) -> float:
    return statistics.median([math.inf if t is None else t for t in times])


def ratio(reference: float, value: float) -> Optional[float]:
    if math.isinf(reference) and math.isinf(value):
        return None
    if math.isinf(value):
        return 0.0
    return math.inf if math.isinf(reference) else reference / value


def summarise(runs: dict[str, list[dict[float, Optional[float]]]], reference: str,
              wall: Optional[dict[str, float]] = None) -> list[Row]:
    ref = {q: median_time([r[q] for r in runs[reference]]) for q in TARGETS}
    rows = []
    for method, seeds in runs.items():
        med = {q: median_time([r[q] for r in seeds]) for q in TARGETS}
        # The resampling of `hpo simulate --json` (seed i with random search's seed i), so the figures compare.
        ci = {q: bootstrap_intervals([r[q] for r in seeds], [r[q] for r in runs[reference]])[1] for q in TARGETS}
        rows.append(Row(method, med, {q: sum(r[q] is None for r in seeds) for q in TARGETS}, len(seeds),
                        {q: ratio(ref[q], med[q]) for q in TARGETS}, ci,
                        None if wall is None or method not in wall else wall[method] / len(seeds)))
    return rows


def _times(x: Optional[float]) -> str:
    return "-" if x is None else ("inf" if math.isinf(x) else f"{x:.2f}x")


def _interval(ci: Optional[Interval]) -> str:
    if ci is None:
        return "-"
    return f"[{_times(0.0 if ci[0] is None else ci[0])}, {_times(math.inf if ci[1] is None else ci[1])}]"


def format_rows(rows: list[Row]) -> str:
    def hours(s: float) -> str:
        return "never" if math.isinf(s) else f"{s / 3600:.2f}h"

    lines = [f"{'method':24s} {'top 1%':>8s} {'vs rand':>8s} {'95% interval':>16s} {'never':>6s} {'top 5%':>8s} "
             f"{'vs rand':>8s} {'95% interval':>16s} {'never':>6s} {'s/run':>7s}"]
    for r in rows:
        ci = r.speedup_ci or {}
        lines.append(
            f"{r.method:24s} {hours(r.median_s[0.01]):>8s} {_times(r.speedup[0.01]):>8s} {_interval(ci.get(0.01)):>16s} "
            f"{r.unreached[0.01]:>3d}/{r.seeds:<2d} {hours(r.median_s[0.05]):>8s} {_times(r.speedup[0.05]):>8s} "
            f"{_interval(ci.get(0.05)):>16s} {r.unreached[0.05]:>3d}/{r.seeds:<2d} "
            + ("      -" if r.seconds_per_run is None else f"{r.seconds_per_run:7.1f}"))
    return "\n".join(lines)


@dataclass(frozen=True)
class Lead:
    """How much sooner ``method`` reaches each target than ``over`` (over's median / method's median)."""
    method: str
    over: str
    ratio: dict[float, Optional[float]]
    ci: dict[float, Interval]


def leads(runs: dict[str, list[dict[float, Optional[float]]]], over: str) -> list[Lead]:
    """Every other method's lead over ``over``, with the bootstrap 95% interval: an interval that holds 1x
    says the seeds cannot tell the two apart. A lead is a speedup with ``over`` as the reference."""
    return [Lead(r.method, over, r.speedup, r.speedup_ci) for r in summarise(runs, over) if r.method != over]


def format_leads(rows: list[Lead]) -> str:
    lines = [f"{'lead over ' + rows[0].over if rows else 'lead':24s} {'top 1%':>8s} {'95% interval':>16s} "
             f"{'top 5%':>8s} {'95% interval':>16s}"]
    for r in rows:
        lines.append(f"{r.method:24s} {_times(r.ratio[0.01]):>8s} {_interval(r.ci[0.01]):>16s} "
                     f"{_times(r.ratio[0.05]):>8s} {_interval(r.ci[0.05]):>16s}")
    return "\n".join(lines)
