"""Spec edits of a running experiment: the budget applies, what defines the experiment is kept.

The operator reads the spec on every reconcile step, so budget fields
(parallelism, maxTrials, maxRetries, maxFailedTrials, maxDuration) and the
trial template apply from the next step. The fields that define what is being
measured - objective, searchSpace, searcher, scheduler, checkpoints - are
fixed when the experiment starts: trials sampled from one space and ranked by
one scheduler cannot be mixed with another's, and paused trials' checkpoints
are found through the checkpoint settings. A change to them is refused, named
in a condition and an event, and the experiment goes on with the values it
accepted. Those are kept in ``status.acceptedSpec`` (with the accepted
maxTrials), so a restarted operator still knows them. Pure: no API calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from hpo_operator.controller.status import set_condition
from hpo_operator.spec import HPOExperimentSpec, experiment_spec_from_dict

IMMUTABLE = ("objective", "searchSpace", "searcher", "scheduler", "checkpoints")
CONDITION = "SpecChangeRefused"
EVENT_REASON = "SpecChangeRefused"


@dataclass(frozen=True)
class SpecReview:
    spec: HPOExperimentSpec  # what this step runs on
    accepted: dict  # for status.acceptedSpec
    refusals: tuple[str, ...]  # one "spec.<field>: why; fix" per refused change

    @property
    def message(self) -> str:
        return "; ".join(self.refusals)

    def announce(self, status: Optional[dict]) -> bool:
        """A new refusal (not the one already on the condition) deserves one Warning event."""
        old = _condition(status)
        return bool(self.refusals) and not (old and old.get("status") == "True" and old.get("message") == self.message)

    def record(self, new_status: dict, status: Optional[dict], generation: Optional[int]) -> None:
        """Add acceptedSpec (when it changed) and the SpecChangeRefused condition to a status patch."""
        if (status or {}).get("acceptedSpec") != self.accepted:
            new_status["acceptedSpec"] = self.accepted
        base = {"conditions": new_status.get("conditions", (status or {}).get("conditions") or [])}
        if self.refusals:
            new_status["conditions"] = set_condition(base, CONDITION, "True", "ImmutableFieldChanged",
                                                     self.message, generation)
        elif _condition(status) and _condition(status).get("status") != "False":
            new_status["conditions"] = set_condition(base, CONDITION, "False", "SpecAccepted",
                                                     "the spec in effect is the one applied", generation)


def _condition(status: Optional[dict]) -> Optional[dict]:
    return next((c for c in (status or {}).get("conditions") or [] if c.get("type") == CONDITION), None)


def review(spec: HPOExperimentSpec, accepted: Optional[dict], trials_created: int) -> SpecReview:
    """The spec to run this step: ``spec`` with every change that cannot apply reverted to ``accepted``."""
    current = spec.to_manifest()
    if not accepted:
        return SpecReview(spec, _accepted_part(current), ())
    effective, refusals = dict(current), []
    for key in IMMUTABLE:
        if key in accepted and current.get(key) != accepted[key]:
            refusals.append(f"spec.{key}: cannot change while the experiment runs (its trials were sampled and "
                            f"ranked with the accepted {key}); it goes on with the accepted value; to use the new "
                            f"one, create a new experiment")
            effective[key] = accepted[key]
    budget = dict(current["budget"])
    if budget["maxTrials"] < trials_created:
        kept = max(accepted.get("maxTrials", trials_created), trials_created)
        refusals.append(f"spec.budget.maxTrials: {budget['maxTrials']} is below the {trials_created} trials already "
                        f"created; it goes on with maxTrials {kept}; set it to {trials_created} or more to create "
                        f"no further trials, or create a new experiment")
        budget["maxTrials"] = kept
    effective["budget"] = budget
    in_effect = experiment_spec_from_dict(effective) if refusals else spec
    return SpecReview(in_effect, _accepted_part(effective), tuple(refusals))


def _accepted_part(manifest: dict) -> dict:
    return {**{key: manifest[key] for key in IMMUTABLE}, "maxTrials": manifest["budget"]["maxTrials"]}
