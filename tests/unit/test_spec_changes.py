"""Spec edits of a running experiment: budget changes apply, changes to what it measures are refused."""

from __future__ import annotations

import copy
import json

import pytest

from hpo_operator.controller.spec_changes import CONDITION, review
from hpo_operator.spec import experiment_spec_from_dict


def spec(manifest, **budget):
    doc = copy.deepcopy(manifest["spec"])
    doc.setdefault("budget", {}).update(budget)
    return experiment_spec_from_dict(doc)


def accepted_at_start(manifest, **budget) -> dict:
    """status.acceptedSpec as the first step writes it, through a JSON round trip like the API server's."""
    return json.loads(json.dumps(review(spec(manifest, **budget), None, 0).accepted))


def test_the_first_step_accepts_the_spec_as_it_is(manifest):
    first = review(spec(manifest, maxTrials=8), None, 0)
    assert first.refusals == () and first.spec == spec(manifest, maxTrials=8)
    assert set(first.accepted) == {"objective", "searchSpace", "searcher", "scheduler", "checkpoints", "maxTrials"}
    assert first.accepted["maxTrials"] == 8


@pytest.mark.parametrize("change", [
    {"parallelism": 5}, {"parallelism": 1}, {"maxTrials": 40}, {"maxTrials": 6}, {"maxRetries": 0},
    {"maxFailedTrials": 10}, {"maxDuration": "2h"},
])
def test_budget_changes_apply(manifest, change):
    accepted = accepted_at_start(manifest, maxTrials=8, parallelism=2)
    edited = spec(manifest, **{"maxTrials": 8, "parallelism": 2, **change})
    result = review(edited, accepted, trials_created=6)
    assert result.refusals == ()
    assert result.spec == edited  # the step runs on the edited budget
    assert result.accepted["maxTrials"] == edited.budget.max_trials


def test_a_trial_template_change_applies_to_the_next_pods(manifest):
    accepted = accepted_at_start(manifest)
    manifest["spec"]["trialTemplate"]["spec"]["containers"][0]["image"] = "trainer:2"
    result = review(spec(manifest), accepted, 3)
    assert result.refusals == () and result.spec.trainer()["image"] == "trainer:2"


@pytest.mark.parametrize("field, edit", [
    ("searchSpace", lambda s: s["searchSpace"].update(extra={"type": "uniform", "min": 0, "max": 1})),
    ("objective", lambda s: s["objective"].update(mode="max")),
    ("scheduler", lambda s: s["scheduler"].update(maxResource=81)),
    ("searcher", lambda s: s.update(searcher={"seed": 7})),
    ("checkpoints", lambda s: s.update(checkpoints={"size": "9Gi"})),
])
def test_changes_to_what_the_experiment_measures_are_refused_and_the_accepted_value_kept(manifest, field, edit):
    accepted = accepted_at_start(manifest)
    original = spec(manifest)
    edit(manifest["spec"])
    manifest["spec"].setdefault("budget", {})["parallelism"] = 4  # an allowed change in the same edit
    result = review(spec(manifest), accepted, 3)
    assert len(result.refusals) == 1
    message = result.refusals[0]
    assert message.startswith(f"spec.{field}: ") and "create a new experiment" in message
    python_name = {"searchSpace": "search_space"}.get(field, field)
    assert getattr(result.spec, python_name) == getattr(original, python_name)  # runs on the accepted value
    assert result.spec.budget.parallelism == 4  # while the budget edit still applies
    assert result.accepted == accepted  # and the accepted record does not drift


def test_adding_a_default_explicitly_is_no_change(manifest):
    accepted = accepted_at_start(manifest)
    manifest["spec"]["scheduler"]["reductionFactor"] = 3
    manifest["spec"]["objective"]["mode"] = "min"
    assert review(spec(manifest), accepted, 3).refusals == ()


def test_max_trials_below_the_trials_already_created_is_refused(manifest):
    accepted = accepted_at_start(manifest, maxTrials=10)
    result = review(spec(manifest, maxTrials=4), accepted, trials_created=6)
    assert result.refusals == ("spec.budget.maxTrials: 4 is below the 6 trials already created; it goes on with "
                               "maxTrials 10; set it to 6 or more to create no further trials, or create a new "
                               "experiment",)
    assert result.spec.budget.max_trials == 10 and result.accepted["maxTrials"] == 10
    lowered = review(spec(manifest, maxTrials=6), accepted, trials_created=6)  # down to what exists: applies
    assert lowered.refusals == () and lowered.spec.budget.max_trials == 6


def test_the_refusal_is_a_condition_and_one_event_per_new_refusal(manifest):
    accepted = accepted_at_start(manifest)
    manifest["spec"]["objective"]["mode"] = "max"
    result = review(spec(manifest), accepted, 3)
    status = {"acceptedSpec": accepted, "conditions": [{"type": "Succeeded", "status": "Unknown"}]}
    assert result.announce(status)
    patch = {"conditions": list(status["conditions"])}
    result.record(patch, status, generation=2)
    cond = next(c for c in patch["conditions"] if c["type"] == CONDITION)
    assert (cond["status"], cond["reason"], cond["observedGeneration"]) == ("True", "ImmutableFieldChanged", 2)
    assert cond["message"] == result.message and "spec.objective" in cond["message"]
    assert any(c["type"] == "Succeeded" for c in patch["conditions"])  # other conditions kept
    assert "acceptedSpec" not in patch  # unchanged, not rewritten

    status_after = {**status, "conditions": patch["conditions"]}
    assert not review(spec(manifest), accepted, 3).announce(status_after)  # the next steps stay quiet

    manifest["spec"]["objective"]["mode"] = "min"  # the user puts it back
    reverted = review(spec(manifest), accepted, 3)
    assert not reverted.announce(status_after)
    patch = {"conditions": list(status_after["conditions"])}
    reverted.record(patch, status_after, generation=3)
    cond = next(c for c in patch["conditions"] if c["type"] == CONDITION)
    assert (cond["status"], cond["reason"]) == ("False", "SpecAccepted")


def test_no_condition_while_nothing_was_ever_refused(manifest):
    accepted = accepted_at_start(manifest)
    patch = {"conditions": []}
    review(spec(manifest, parallelism=3), accepted, 1).record(patch, {"acceptedSpec": accepted}, 1)
    assert patch == {"conditions": []}
