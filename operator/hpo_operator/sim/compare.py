"""Compare search methods with random search on the same table, workers and configuration draws.

A method is a name: ``random`` (every trial trained to the end), a scheduler
from ``SCHEDULER_NAMES`` (random draws), ``<scheduler>+<searcher>`` (a
model-based searcher, ``kde`` or ``gp``, under that scheduler), or
``default`` (what a manifest naming only ``maxResource`` gets). Every method
draws in one regime: with repeats, or every table row at most once; model
searchers need the latter, so ``draws="auto"`` picks it when one is compared.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Literal, Optional, Sequence

import numpy as np

from hpo_operator.scheduling.factory import scheduler_spec_for
from hpo_operator.search import MODEL_SEARCHERS
from hpo_operator.sim.simulator import SimulationResult, simulate
from hpo_operator.sim.table import LearningCurveTable
from hpo_operator.spec.experiment import SchedulerSpec, SearcherSpec

RANDOM = "random"  # FIFO over random draws: every trial trained to the end
DEFAULT = "default"  # the manifest default: SchedulerSpec and SearcherSpec with only maxResource set
BOOTSTRAP = 1000
Draws = Literal["auto", "with-replacement", "without-repeats"]


@dataclass(frozen=True)
class SchedulerSummary:
    name: str
    top1_median_s: Optional[float]
    top5_median_s: Optional[float]
    speedup_top1: Optional[float]
    speedup_top5: Optional[float]
    unreached_top1: int  # seeds that never reached the target within the budget
    unreached_top5: int
    runs: list[SimulationResult]
    # Bootstrap 95% intervals over seeds (resampled together with random search's): None ends are infinite.
    top1_ci_s: tuple[Optional[float], Optional[float]] = (None, None)
    top5_ci_s: tuple[Optional[float], Optional[float]] = (None, None)
    speedup_top1_ci: tuple[Optional[float], Optional[float]] = (None, None)
    speedup_top5_ci: tuple[Optional[float], Optional[float]] = (None, None)


def method_specs(name: str, base: SchedulerSpec) -> tuple[SchedulerSpec, Optional[SearcherSpec]]:
    """Scheduler and searcher of the method called ``name`` (see the module docstring)."""
    if name == DEFAULT:
        return SchedulerSpec(max_resource=base.max_resource), SearcherSpec()
    scheduler, _, searcher = name.partition("+")
    if searcher and searcher not in MODEL_SEARCHERS:
        raise ValueError(f"unknown searcher {searcher!r} in {name!r}; choose from {', '.join(MODEL_SEARCHERS)}")
    spec = scheduler_spec_for("fifo" if scheduler == RANDOM else scheduler, base)
    return spec, SearcherSpec(algorithm=searcher) if searcher else None


def uses_model(name: str, base: SchedulerSpec) -> bool:
    searcher = method_specs(name, base)[1]
    return searcher is not None and searcher.algorithm in MODEL_SEARCHERS


def _median(times) -> Optional[float]:
    # A seed that never reached the target counts as infinitely slow.
    med = statistics.median([t if t is not None else float("inf") for t in times])
    return None if med == float("inf") else med


def _finite_or_none(v: float) -> Optional[float]:
    return None if not np.isfinite(v) else float(v)


def bootstrap_intervals(times: list[Optional[float]], ref: list[Optional[float]], seed: int = 0):
    """95% intervals of the median time and of the speedup (random's median over this one's), seeds
    resampled in pairs so both medians see the same draws. ``None`` in either list: never reached."""
    t = np.array([np.inf if v is None else v for v in times])
    r = np.array([np.inf if v is None else v for v in ref])
    idx = np.random.default_rng(seed).integers(len(t), size=(BOOTSTRAP, len(t)))
    med_t = np.median(t[idx], axis=1)
    med_r = np.median(r[idx], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(np.isinf(med_t), 0.0, med_r / med_t)  # never reached: no speedup
    ratio = np.where(np.isinf(med_t) & np.isinf(med_r), 1.0, ratio)  # neither reached: level
    lo_t, hi_t = np.quantile(med_t, [0.025, 0.975], method="inverted_cdf")
    lo_s, hi_s = np.quantile(ratio, [0.025, 0.975], method="inverted_cdf")
    return (_finite_or_none(lo_t), _finite_or_none(hi_t)), (_finite_or_none(lo_s), _finite_or_none(hi_s))


def compare(table: LearningCurveTable, schedulers: Sequence[str], *, workers: int, seeds: int,
            epoch_scale: float, overhead: float, min_resource: int = 1, max_resource: Optional[int] = None,
            reduction_factor: float = 3, brackets: int = 3, max_trials: int = 1000,
            max_time: Optional[float] = None, draws: Draws = "auto") -> dict[str, SchedulerSummary]:
    base = SchedulerSpec(min_resource=min_resource, max_resource=max_resource or table.max_resource,
                         reduction_factor=reduction_factor, brackets=brackets)
    names = [RANDOM] + [s for s in schedulers if s != RANDOM]
    repeats = resolve_draws(draws, names, base) == "with-replacement"
    runs: dict[str, list[SimulationResult]] = {n: [] for n in names}
    for seed in range(seeds):
        for name in names:
            spec, searcher = method_specs(name, base)
            runs[name].append(simulate(table, spec, name=name, workers=workers, seed=seed, epoch_scale=epoch_scale,
                                       overhead=overhead, max_trials=max_trials, max_time=max_time,
                                       searcher_spec=searcher, repeats=repeats))
    ref1 = [r.time_to_target[0.01] for r in runs[RANDOM]]
    ref5 = [r.time_to_target[0.05] for r in runs[RANDOM]]
    out = {}
    for name in names:
        times1 = [r.time_to_target[0.01] for r in runs[name]]
        times5 = [r.time_to_target[0.05] for r in runs[name]]
        t1, t5, m1, m5 = _median(times1), _median(times5), _median(ref1), _median(ref5)
        ci_t1, ci_s1 = bootstrap_intervals(times1, ref1)
        ci_t5, ci_s5 = bootstrap_intervals(times5, ref5)
        out[name] = SchedulerSummary(
            name, t1, t5,
            None if t1 is None or m1 is None else m1 / t1,
            None if t5 is None or m5 is None else m5 / t5,
            sum(t is None for t in times1), sum(t is None for t in times5), runs[name],
            ci_t1, ci_t5, ci_s1, ci_s5,
        )
    return out


def resolve_draws(draws: Draws, names: Sequence[str], base: SchedulerSpec) -> str:
    """The regime a comparison uses: ``auto`` is without repeats when any method has a model."""
    if draws != "auto":
        if draws == "with-replacement" and any(uses_model(n, base) for n in names):
            raise ValueError("--draws with-replacement: model-based searchers pick each table row at most once; "
                             "use --draws without-repeats (or auto)")
        return draws
    return "without-repeats" if any(uses_model(n, base) for n in names) else "with-replacement"
