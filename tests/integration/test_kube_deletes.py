"""The operator's batched deletions, against the real API server: exactly the runs named go."""

from __future__ import annotations

from kubernetes import client

from hpo_operator.controller.builders import LABEL_ATTEMPT, LABEL_EXPERIMENT, LABEL_TRIAL
from hpo_operator.controller.kube import DELETE_CHUNK, Api


def make_pod(core, ns: str, experiment: str, trial: str, attempt: int, name: str = "") -> None:
    core.create_namespaced_pod(ns, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name or f"{trial}-{attempt}", "labels": {
            LABEL_EXPERIMENT: experiment, LABEL_TRIAL: trial, LABEL_ATTEMPT: str(attempt)}},
        "spec": {"automountServiceAccountToken": False, "containers": [{"name": "trainer", "image": "trainer"}]}})


def pod_names(core, ns: str) -> set[str]:
    return {p.metadata.name for p in core.list_namespaced_pod(ns).items if not p.metadata.deletion_timestamp}


def test_deleting_runs_leaves_a_trials_next_pod_and_other_experiments_alone(namespace, kube_api):
    core = client.CoreV1Api(kube_api)
    # After a crash a trial's next pod (attempt 2) can exist before its last one (attempt 1) is deleted.
    make_pod(core, namespace, "exp", "exp-0000", 1)
    make_pod(core, namespace, "exp", "exp-0000", 2)
    make_pod(core, namespace, "exp", "exp-0001", 1)
    make_pod(core, namespace, "exp", "exp-0002", 3)
    make_pod(core, namespace, "other", "exp-0001", 1, name="other-0001-1")  # another experiment's, same labels
    Api(kube_api).delete_trial_pods(namespace, "exp", [("exp-0000", 1), ("exp-0001", 1), ("exp-0002", 3)])
    assert pod_names(core, namespace) == {"exp-0000-2", "other-0001-1"}


def test_more_runs_than_one_request_names_are_all_deleted(namespace, kube_api):
    core = client.CoreV1Api(kube_api)
    trials = [f"exp-{i:04d}" for i in range(DELETE_CHUNK + 5)]
    for trial in trials:
        make_pod(core, namespace, "exp", trial, 1)
    Api(kube_api).delete_trial_pods(namespace, "exp", [(t, 1) for t in trials[1:]])
    assert pod_names(core, namespace) == {"exp-0000-1"}
