"""``hpo status`` as text: the same lines for a local run and a cluster experiment. Pure."""

from __future__ import annotations

from typing import Any, Optional

from hpo_operator.resources import TrialPhase
from hpo_operator.views.model import ExperimentSnapshot, fmt_value, ranked, rung_counts

DEFAULT_TRIAL_ROWS = 10


def fmt_config(config: dict[str, Any]) -> str:
    def one(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    return " ".join(f"{k}={one(v)}" for k, v in sorted(config.items()))


def fmt_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def summary_lines(s: ExperimentSnapshot) -> list[str]:
    c = s.counts()
    head = f"experiment {s.name} ({s.where}): {s.phase}" + (f" ({s.reason})" if s.reason else "")
    if s.elapsed_s is not None:
        head += f" after {fmt_duration(s.elapsed_s)}"
    budget = f" of {s.max_trials}" if s.max_trials else ""
    lines = [head,
             f"trials: {len(s.trials)}{budget} (running {c['Running']}, pending {c['Pending']}, paused {c['Paused']}, "
             f"stopped {c['Stopped']}, completed {c['Completed']}, failed {c['Failed']})"]
    rungs = rung_counts(s)
    if len(rungs) > 1:
        parts = [f"epoch {r.level}: {r.reached} reached, {r.went_on} went on" for r in rungs[:-1]]
        parts.append(f"epoch {rungs[-1].level} (max): {rungs[-1].reached} reached")
        lines.append("rungs: " + " | ".join(parts))
    if s.best:
        lines.append(f"best: {s.best.trial} {s.metric}={fmt_value(s.best.value)} at epoch {s.best.epoch}"
                     + ("" if s.best.complete else " (not fully trained)"))
        lines.append(f"  config: {fmt_config(s.best.config)}")
        if s.best.checkpoint:
            lines.append(f"  checkpoint: {s.best.checkpoint}")
    if s.message:
        lines.append(f"message: {s.message}")
    return lines


def trial_lines(s: ExperimentSnapshot, limit: Optional[int] = DEFAULT_TRIAL_ROWS) -> list[str]:
    order = ranked(s)
    if not order:
        return ["no trials yet"]
    shown = order if limit is None else order[:limit]
    note = f"{len(shown)} of {len(order)}; --trials for all" if len(shown) < len(order) else f"all {len(order)}"
    metric = s.metric[:10]
    lines = [f"trials by {s.metric} ({'lowest' if s.mode == 'min' else 'highest'} first; {note}):",
             f"{'trial':24s} {'phase':9s} {'epoch':>5s} {metric:>10s} {'best':>10s} {'runs':>4s} {'fail':>4s}  config"]
    for t in shown:
        lines.append(f"{t.name:24s} {t.phase:9s} {t.last_epoch:5d} {fmt_value(t.last_value):>10s} "
                     f"{fmt_value(t.best_value(s.mode)):>10s} {t.attempts:4d} {t.failures:4d}  {fmt_config(t.config)}"
                     + (f"  ({t.message})" if t.message and t.phase == TrialPhase.FAILED else ""))
    return lines


def warning_lines(s: ExperimentSnapshot) -> list[str]:
    if not s.warnings:
        return []
    lines = ["recent warnings:"]
    for w in s.warnings:
        count = f" (x{w.count})" if w.count > 1 else ""
        lines.append(f"  {w.time} {w.object} {w.reason}{count}: {w.message}")
    return lines


def status_text(s: ExperimentSnapshot, trial_limit: Optional[int] = DEFAULT_TRIAL_ROWS) -> str:
    blocks = [summary_lines(s), trial_lines(s, trial_limit), warning_lines(s)]
    return "\n\n".join("\n".join(b) for b in blocks if b)
