"""HPOTrial objects <-> the engine's TrialState.

The trial's status is the record of truth. ``observations`` is appended by the
sidecar; ``processed`` counts how many of them the operator has already fed
to the scheduler, so after a restart each observation is acted on exactly once.
Both directions go through ``HPOTrialStatus``, the model the CRD's status schema
is generated from, so the operator cannot write a field the API server would prune.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from hpo_operator.engine import TrialState
from hpo_operator.resources import TrialPhase
from hpo_operator.search.training_cost import epoch_seconds
from hpo_operator.spec.status import HPOTrialStatus


@dataclass
class TrialView:
    """One HPOTrial as read from the API: the engine's state (the processed observations) and the operator's
    bookkeeping."""

    obj: dict
    status: HPOTrialStatus
    state: TrialState
    processed: int
    pod: Optional[str]
    decided_epoch: int

    @property
    def name(self) -> str:
        return self.obj["metadata"]["name"]


def _value(v) -> float:
    return float("nan") if v is None else float(v)


def observations_of(trial_obj: dict) -> list[tuple[int, Optional[float], Optional[float]]]:
    """(epoch, value, seconds the epoch took or None) of every observation on record, processed or not."""
    records = (trial_obj.get("status") or {}).get("observations") or []
    seconds = _seconds(records)
    return [(int(o["epoch"]), o.get("value"), seconds.get(int(o["epoch"]))) for o in records]


def _seconds(records: list) -> dict[int, float]:
    """Epoch -> seconds it took, timed only within one run (the sidecar records each epoch's attempt):
    a run's first epoch also holds the pod's start."""
    return epoch_seconds([int(o["epoch"]) for o in records], [o.get("time") for o in records],
                         [o.get("attempt") for o in records])


def read_trial(obj: dict) -> TrialView:
    spec = obj.get("spec") or {}
    status = HPOTrialStatus.model_validate(obj.get("status") or {})
    observations = status.observations or []
    processed = min(status.processed, len(observations))
    state = TrialState(
        trial_id=int(spec["trialId"]),
        name=obj["metadata"]["name"],
        config=dict(spec.get("config") or {}),
        bracket=int(spec.get("bracket", 0)),
        phase=status.phase,
        # No status yet: created, but its launch was never recorded; it runs to what it was granted.
        until=status.until if status.until is not None else int(spec.get("granted", 0)),
        observations=[(o["epoch"], _value(o.get("value"))) for o in observations[:processed]],
        epoch_seconds=_seconds(observations[:processed]),
        attempts=status.attempts,
        failures=status.failures,
        message=status.message or "",
    )
    return TrialView(obj, status, state, processed, status.pod, status.decided_epoch)


def status_of(state: TrialState, processed: int, pod: Optional[str], decided_epoch: int,
              checkpoint: Optional[str], phase: Optional[str] = None) -> dict:
    """The operator's part of a trial's status (never ``observations``: the sidecar appends those).
    ``phase``: the one to record, if not the state's (``ExperimentEngine.settled_phase``).
    A None is written as null, which a merge patch takes for "remove the field"."""
    return {_ALIAS[field]: value for field, value in (
        ("phase", TrialPhase(phase or state.phase)),
        ("until", state.until),
        ("processed", processed),
        ("decided_epoch", decided_epoch),
        ("attempts", state.attempts),
        ("failures", state.failures),
        ("pod", pod),
        ("message", state.message or None),
        ("checkpoint", checkpoint),
    )}


# HPOTrialStatus's field names -> their names in the API. status_of writes by these rather than through
# model_construct, which looked up every default factory's signature on each call (a seventh of a step of a
# thousand-trial experiment).
_ALIAS = {name: info.alias or name for name, info in HPOTrialStatus.model_fields.items()}
# Every field of a trial's status the operator writes (by alias).
OPERATOR_FIELDS = tuple(HPOTrialStatus.model_fields[f].alias for f in (
    "phase", "until", "processed", "decided_epoch", "attempts", "failures", "pod", "message", "checkpoint",
    "problems_posted", "run_fence", "last_output", "conditions"))


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
