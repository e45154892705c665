"""The status the operator writes on an experiment, and the conditions it shares with its trials.

Conditions are replaced by type; lastTransitionTime moves only when the status flips. (Never an empty
message: the 1.20 API server takes "" in a custom resource's status for null.)
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

from hpo_operator.controller.builders import checkpoint_location
from hpo_operator.engine import ExperimentEngine
from hpo_operator.resources import ExperimentPhase, text_value
from hpo_operator.spec.status import HPOExperimentStatus

# The condition, on a trial and on its experiment, saying what keeps a trial's pod from starting (True, with
# Kubernetes' reason and message); written only once a problem was seen.
POD_PROBLEM = "PodProblem"


def set_condition(status: Optional[dict], type_: str, status_value: str, reason: str, message: str,
                  generation: Optional[int]) -> list[dict]:
    conditions = [dict(c) for c in (status or {}).get("conditions") or []]
    old = next((c for c in conditions if c.get("type") == type_), None)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    new = {"type": type_, "status": status_value, "reason": reason, "message": message,
           "lastTransitionTime": old["lastTransitionTime"] if old and old.get("status") == status_value
           and old.get("lastTransitionTime") else now,
           "observedGeneration": generation}
    return [c for c in conditions if c.get("type") != type_] + [new]


def pod_problem_conditions(conditions: Optional[list], problem: Optional[tuple[str, str]], now: datetime
                           ) -> list[dict]:
    """A trial's conditions with ``PodProblem``: True with Kubernetes' reason and message once its pod could
    not start (kept when the run ends), False once its pod started or the trial runs again."""
    conditions = [dict(c) for c in conditions or []]
    old = next((c for c in conditions if c.get("type") == POD_PROBLEM), None)
    status, reason, message = ("True", *problem) if problem else ("False", "NoProblem", "its pod has started")
    message = message or reason
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    new = {"type": POD_PROBLEM, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": old["lastTransitionTime"] if old and old.get("status") == status else stamp}
    return [c for c in conditions if c.get("type") != POD_PROBLEM] + [new]


def pod_problem_summary(problems: dict[str, tuple[str, str]]) -> Optional[tuple[str, str]]:
    """(reason, message) of the experiment's PodProblem condition: the first trial's problem, how many share it."""
    if not problems:
        return None
    first, (reason, message) = next(iter(problems.items()))
    more = len(problems) - 1
    return reason, f"{first}: {message}" + (f" (and {more} more trial{'s' * (more > 1)})" if more else "")


def experiment_status(engine: ExperimentEngine, spec, name: str, status: dict, start: str, now: datetime,
                      outcome, best) -> dict:
    counts = {k.lower(): v for k, v in engine.counts().items()}
    counts["created"] = len(engine.trials)
    phase = outcome.phase if outcome else ExperimentPhase.RUNNING
    ended = counts["stopped"] + counts["completed"] + counts["failed"]
    out = {"phase": phase, "trials": counts, "startTime": start, "observedGeneration": status.get("observedGeneration"),
           "progress": f"{ended}/{spec.budget.max_trials}"}
    if best is not None:
        claim, sub = checkpoint_location(spec, name, best.trial.name)
        out["best"] = {"trial": best.trial.name, "config": best.trial.config,
                       "value": best.value if best.value == best.value and abs(best.value) != float("inf") else None,
                       "epoch": best.epoch, "complete": best.complete, "checkpoint": f"{claim}:{sub or '/'}"}
        out["bestValue"] = text_value(best.value)
    if outcome is not None:
        out.update(reason=outcome.reason, message=outcome.message,
                   completionTime=status.get("completionTime") or now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return out


def with_conditions(st: dict, status: dict, generation: Optional[int], pod_problems: dict[str, tuple[str, str]]
                    ) -> dict:
    """``st`` (``experiment_status``) with its ``Succeeded`` condition, and ``PodProblem`` once a trial's pod
    could not start (pods that cannot start, a bad image or no node with a free GPU, show on the experiment
    too); ``status``: the experiment's status as on record."""
    st = {**st, "observedGeneration": generation}
    st["conditions"] = set_condition(status, "Succeeded", {ExperimentPhase.SUCCEEDED: "True", ExperimentPhase.FAILED: "False"}.get(st["phase"], "Unknown"),
                                     st.get("reason") or "Running", st.get("message") or "trials are running",
                                     generation)
    problem = pod_problem_summary(pod_problems)
    if problem or any(c.get("type") == POD_PROBLEM for c in st["conditions"]):
        reason, message = problem or ("PodsStarted", "no trial pod has a problem starting")
        st["conditions"] = set_condition({"conditions": st["conditions"]}, POD_PROBLEM, "True" if problem else "False",
                                         reason, message, generation)
    return st


_EXPERIMENT_STATUS_FIELDS = frozenset(f.alias or name for name, f in HPOExperimentStatus.model_fields.items())


def experiment_status_patch(st: dict) -> dict:
    """``st`` as written: through the model the CRD's status schema is generated from, so a field the schema
    lacks fails here instead of being pruned by the API server without a word."""
    unknown = set(st) - _EXPERIMENT_STATUS_FIELDS
    if unknown:
        raise ValueError(f"experiment status fields the HPOExperiment schema lacks: {sorted(unknown)}")
    return HPOExperimentStatus.model_validate(st).model_dump(mode="json", by_alias=True, exclude_unset=True)
