"""The results file of a local run: every trial and observation, enough to resume."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional

from hpo_operator.engine import ExperimentEngine, TrialState

RESULTS_FILE = "results.json"
FORMAT_VERSION = 1


def _value(v: float) -> Optional[float]:
    return v if v is not None and math.isfinite(v) else None  # JSON has no NaN: null ranks worst


def trial_to_dict(t: TrialState, checkpoint_dir: Path, times: Optional[dict[int, float]] = None) -> dict[str, Any]:
    """``times``: epoch -> unix time the trainer wrote it, for plots against wall time."""
    times = times or {}
    return {
        "id": t.trial_id, "name": t.name, "config": t.config, "bracket": t.bracket, "phase": t.phase,
        "until": t.until, "attempts": t.attempts, "failures": t.failures, "message": t.message,
        "last_epoch": t.last_epoch, "observations": [[e, _value(v)] for e, v in t.observations],
        "times": [times.get(e) for e, _ in t.observations],
        "checkpoint_dir": str(checkpoint_dir),
    }


def trial_from_dict(d: dict[str, Any]) -> TrialState:
    obs = [(int(e), float("nan") if v is None else float(v)) for e, v in d["observations"]]
    return TrialState(int(d["id"]), d["name"], d["config"], int(d.get("bracket", 0)), d["phase"], int(d["until"]),
                      obs, int(d.get("attempts", 0)), int(d.get("failures", 0)), d.get("message", ""))


def times_from_dict(d: dict[str, Any]) -> dict[int, float]:
    """The epoch -> unix time map of a trial written by ``trial_to_dict`` (empty for older files)."""
    return {int(e): float(t) for (e, _), t in zip(d["observations"], d.get("times") or []) if t is not None}


def snapshot(engine: ExperimentEngine, run_dir: Path, phase: str, elapsed: float,
             extra: Optional[dict] = None, times: Optional[dict[int, dict[int, float]]] = None) -> dict[str, Any]:
    best = engine.best()
    doc = {
        "format": FORMAT_VERSION,
        "experiment": engine.name,
        "phase": phase,
        "reason": engine.outcome.reason if engine.outcome else None,
        "message": engine.outcome.message if engine.outcome else None,
        "elapsed_s": round(elapsed, 3),
        "objective": {"metric": engine.spec.objective.metric, "mode": engine.mode},
        "counts": engine.counts(),
        "best": None if best is None else {
            "trial": best.trial.name, "config": best.trial.config, "value": _value(best.value),
            "epoch": best.epoch, "complete": best.complete,
            "checkpoint_dir": str(run_dir / best.trial.name / "checkpoints"),
        },
        "trials": [trial_to_dict(t, run_dir / t.name / "checkpoints", (times or {}).get(t.trial_id))
                   for t in sorted(engine.trials.values(), key=lambda t: t.trial_id)],
    }
    if extra:
        doc.update(extra)
    return doc


def write_results(run_dir: Path, doc: dict[str, Any]) -> Path:
    """Atomic write: a crash mid-write leaves the previous file intact."""
    path = run_dir / RESULTS_FILE
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_results(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RESULTS_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no results file; nothing to resume (run without --resume)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: unreadable results file ({err})") from None
    if doc.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: results format {doc.get('format')} is not {FORMAT_VERSION}")
    return doc
