"""What the operator keeps of one experiment between steps: the shared ``ExperimentEngine`` plus, per
trial, how many observations it has acted on and the status it last wrote.

Built from the HPOTrial objects (a fresh list) when the experiment's owner
starts, after any step that failed half-way, and when the spec changes;
every step in between only feeds it what is new. Nothing lives only in
memory: a restarted operator rebuilds the same state and makes the same
decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional

from hpo_operator.controller.builders import object_ref
from hpo_operator.controller.status import POD_PROBLEM
from hpo_operator.controller.trials import TrialView, operator_fields, read_trial
from hpo_operator.engine import ExperimentEngine

@dataclass
class TrialBook:
    """What the operator knows of one trial beyond the engine's TrialState."""

    trial_id: int
    ref: Optional[dict]  # the HPOTrial's object_ref (for events and owner references); None until created
    processed: int  # observations acted on
    decided: int  # decidedEpoch: the rung the latest decision was made at
    pod: Optional[str]
    written: dict  # the operator's status fields as on record
    problems_posted: int = 0  # sidecar problems already posted as events
    has_records: bool = True  # status.observations exists (written empty before the trial's first pod)
    pod_problem: Optional[tuple[str, str]] = None  # (Kubernetes' reason, message) keeping its pod from starting
    pod_problems_posted: set = field(default_factory=set)  # reasons posted as Warnings for its current pod
    output: Optional[str] = None  # the last failed run's last output (status.lastOutput)


@dataclass
class ExperimentState:
    name: str
    engine: ExperimentEngine
    books: dict[str, TrialBook]  # trial name -> book, in trial id order
    generation: Optional[int] = None
    awaiting: dict[str, datetime] = field(default_factory=dict)  # pods not yet seen in the cache -> since

    @classmethod
    def from_trials(cls, name: str, spec, trial_objs: list[dict], generation: Optional[int] = None,
                    pods: Optional[dict[str, dict]] = None) -> "ExperimentState":
        """``pods``: the experiment's pods, listed before the trials (see ``compact_pod``)."""
        views = sorted((read_trial(o) for o in trial_objs), key=lambda v: v.state.trial_id)
        engine = ExperimentEngine(name, spec)
        # A run recorded Paused or Completed at its last decision whose pod is still there: its exit is
        # still to be handled (and its pod deleted).
        exiting = [v.state.trial_id for v in views
                   if v.pod and v.pod in (pods or {}) and not (pods or {})[v.pod].get("deleting")]
        engine.restore([v.state for v in views], exiting=exiting)
        books = {v.name: book_of(v) for v in views}
        return cls(name, engine, books, generation)


def book_of(view: TrialView) -> TrialBook:
    """A trial's book as its status (read through ``HPOTrialStatus``) records it."""
    status = view.status
    problem = next(((c.reason, c.message) for c in status.conditions
                    if c.type == POD_PROBLEM and c.status == "True"), None)
    return TrialBook(view.state.trial_id, object_ref(view.obj), view.processed, view.decided_epoch, view.pod,
                     operator_fields(view.obj), min(status.problems_posted, len(status.problems or [])),
                     has_records=status.observations is not None, pod_problem=problem,
                     pod_problems_posted={problem[0]} if problem else set(), output=status.last_output)


def problems_of(trial_obj: dict) -> list[dict]:
    return list((trial_obj.get("status") or {}).get("problems") or [])
