"""HPOTrial objects <-> the engine's TrialState.

The trial's status is the record of truth. ``observations`` is appended by the
sidecar; ``processed`` counts how many of them the operator has already fed
to the scheduler, so after a restart each observation is acted on exactly once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from hpo_operator.engine import TrialState


@dataclass
class TrialView:
    """One HPOTrial as read from the API: the engine's state (the processed observations) and the operator's
    bookkeeping."""

    obj: dict
    state: TrialState
    processed: int
    pod: Optional[str]
    decided_epoch: int

    @property
    def name(self) -> str:
        return self.obj["metadata"]["name"]


def _value(v) -> float:
    return float("nan") if v is None else float(v)


def observations_of(trial_obj: dict) -> list[tuple[int, Optional[float]]]:
    """(epoch, value) of every observation on record, processed or not."""
    return [(int(o["epoch"]), o.get("value")) for o in (trial_obj.get("status") or {}).get("observations") or []]


def read_trial(obj: dict) -> TrialView:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    observations = observations_of(obj)
    processed = min(int(status.get("processed", 0)), len(observations))
    state = TrialState(
        trial_id=int(spec["trialId"]),
        name=obj["metadata"]["name"],
        config=dict(spec.get("config") or {}),
        bracket=int(spec.get("bracket", 0)),
        phase=status.get("phase") or "Pending",
        # No status yet: created, but its launch was never recorded; it runs to what it was granted.
        until=int(status["until"]) if "until" in status else int(spec.get("granted", 0)),
        observations=[(e, _value(v)) for e, v in observations[:processed]],
        attempts=int(status.get("attempts", 0)),
        failures=int(status.get("failures", 0)),
        message=status.get("message") or "",
    )
    return TrialView(obj, state, processed, status.get("pod"), int(status.get("decidedEpoch", 0)))


def text_value(value: Optional[float]) -> Optional[str]:
    if value is None:
        return None
    return "NaN" if not math.isfinite(value) else f"{value:.6g}"


def status_of(state: TrialState, processed: int, pod: Optional[str], decided_epoch: int,
              checkpoint: Optional[str], phase: Optional[str] = None) -> dict:
    """The operator's part of a trial's status (never ``observations``: the sidecar appends those).
    ``phase``: the one to record, if not the state's (``ExperimentEngine.settled_phase``)."""
    return {
        "phase": phase or state.phase,
        "until": state.until,
        "processed": processed,
        "decidedEpoch": decided_epoch,
        "attempts": state.attempts,
        "failures": state.failures,
        "pod": pod,
        "message": state.message or None,
        "checkpoint": checkpoint,
        "lastEpoch": state.last_epoch or None,
        "lastValue": text_value(state.last_value),
    }


OPERATOR_FIELDS = ("phase", "until", "processed", "decidedEpoch", "attempts", "failures", "pod", "message",
                   "checkpoint", "lastEpoch", "lastValue", "problemsPosted", "runFence", "lastOutput", "conditions")


def has_records(trial_obj: dict) -> bool:
    """The sidecar's records (``status.observations``) exist: the operator writes them empty before a new
    trial's first pod."""
    return isinstance((trial_obj.get("status") or {}).get("observations"), list)


def operator_fields(trial_obj: dict) -> dict:
    """The operator's part of a trial's status as on record (``status_of``'s fields), without the sidecar's."""
    status = trial_obj.get("status") or {}
    return {key: status[key] for key in OPERATOR_FIELDS if key in status}


def changed(current: dict, desired: dict) -> dict:
    """The fields of ``desired`` that differ from ``current`` (a merge patch)."""
    return {k: v for k, v in desired.items() if current.get(k) != v}
