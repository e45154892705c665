"""Where a local run stands, for ``hpo run``'s live line: a progress bar on a terminal, plain lines in a log. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from hpo_operator.resources import TrialPhase


@dataclass(frozen=True)
class RunProgress:
    experiment: str
    elapsed_s: float
    trials: int  # created so far
    max_trials: int
    counts: dict[str, int]  # trials by phase
    epochs: int  # epochs trained, all trials together
    metric: str
    best_value: Optional[float] = None
    best_trial: Optional[str] = None
    best_epoch: Optional[int] = None
    best_complete: bool = False
    max_duration_s: Optional[float] = None

    @property
    def fraction(self) -> float:
        """How far the budget is spent: trials created of maxTrials, or time of maxDuration when further.

        Promotions go on after the last trial is created, so a full bar with trials running means the
        remaining work is resuming the best trials."""
        done = self.trials / self.max_trials if self.max_trials else 0.0
        if self.max_duration_s:
            done = max(done, self.elapsed_s / self.max_duration_s)
        return min(1.0, done)


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _best(p: RunProgress) -> str:
    if p.best_trial is None:
        return "best -"
    v = "nan" if p.best_value is None or not math.isfinite(p.best_value) else f"{p.best_value:.4g}"
    return f"best {p.metric}={v} ({p.best_trial} @ epoch {p.best_epoch}{'' if p.best_complete else ', partial'})"


def _phases(p: RunProgress) -> str:
    c = p.counts
    return (f"running {c.get('Running', 0) + c.get('Pending', 0)} paused {c.get('Paused', 0)} "
            f"stopped {c.get('Stopped', 0)} completed {c.get('Completed', 0)} failed {c.get('Failed', 0)}")


def plain_line(p: RunProgress) -> str:
    """One line for a log: no control characters."""
    return (f"[{_clock(p.elapsed_s)}] trials {p.trials}/{p.max_trials}: {_phases(p)} | {p.epochs} epochs | "
            f"{_best(p)}")


def _nonzero_phases(p: RunProgress) -> str:
    c = dict(p.counts)
    c[TrialPhase.RUNNING] = c.get(TrialPhase.RUNNING, 0) + c.pop(TrialPhase.PENDING, 0)
    return " ".join(f"{phase.lower()} {n}" for phase, n in c.items() if n) or "starting"


def bar_line(p: RunProgress, width: int) -> str:
    """One terminal line of at most ``width - 1`` characters: a bar of the budget spent, then the counts
    (phases with no trial left out, so the best value fits)."""
    tail = (f" {p.trials}/{p.max_trials} trials | {_nonzero_phases(p)} | {p.epochs} epochs | {_clock(p.elapsed_s)}"
            f" | {_best(p)}")
    bar_width = max(10, min(30, width // 5))
    filled = int(round(p.fraction * bar_width))
    line = f"{p.experiment} [{'#' * filled}{'.' * (bar_width - filled)}]{tail}"
    return line[: max(width - 1, 1)]
