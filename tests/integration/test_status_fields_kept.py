"""The real API server keeps every status field the operator writes, now that the status schemas name their
fields and prune the rest (no x-kubernetes-preserve-unknown-fields)."""

from __future__ import annotations

from datetime import datetime, timezone

from kubernetes import client

from hpo_operator.controller.reconcile import pod_problem_conditions
from hpo_operator.controller.trials import read_trial, status_of
from hpo_operator.engine import TrialState
from hpo_operator.resources import API_VERSION, GROUP, TRIAL_KIND, TRIAL_PLURAL, VERSION, TrialPhase

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def test_a_trials_status_reads_back_as_written_and_an_unknown_field_is_pruned(namespace, kube_api, crds_installed):
    custom = client.CustomObjectsApi(kube_api)
    args = (GROUP, VERSION, namespace, TRIAL_PLURAL)
    custom.create_namespaced_custom_object(*args, {
        "apiVersion": API_VERSION, "kind": TRIAL_KIND, "metadata": {"name": "exp-0003"},
        "spec": {"experiment": "exp", "trialId": 3, "config": {"lr": 0.01}, "granted": 1}})
    state = TrialState(3, "exp-0003", {"lr": 0.01}, phase=TrialPhase.PAUSED, until=9,
                       observations=[(1, 0.5), (3, 0.4), (9, 0.3)], attempts=2, failures=1, message="retry 1/3")
    written = status_of(state, processed=3, pod="exp-0003-2", decided_epoch=9, checkpoint="exp-0003-ckpt:/")
    written.update(problemsPosted=1, runFence=2, lastOutput="Traceback ...",
                   observations=[{"epoch": e, "value": v, "attempt": 1, "time": 1.7e9 + e} for e, v in state.observations],
                   problems=[{"reason": "not_json", "message": "line 4", "attempt": 1}],
                   conditions=pod_problem_conditions(None, ("ErrImagePull", "no such image"), NOW))
    custom.patch_namespaced_custom_object_status(*args, "exp-0003", {"status": {**written, "notAField": 1}})
    trial = custom.get_namespaced_custom_object(*args, "exp-0003")
    assert trial["status"] == {k: v for k, v in written.items() if v is not None}  # nothing pruned but notAField
    view = read_trial(trial)
    assert (view.state, view.processed, view.decided_epoch, view.pod) == (state, 3, 9, "exp-0003-2")
