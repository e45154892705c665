"""The operator's own API calls against the real API server: batched deletions take exactly the runs
named; a run's fence stops its sidecar's late appends; the sidecar's Role follows an upgrade; what the
operator watches is found served."""

from __future__ import annotations

import pytest
from kubernetes import client

from hpo_operator.controller.builders import LABEL_ATTEMPT, LABEL_EXPERIMENT, LABEL_TRIAL
from hpo_operator.controller.actions import DELETE_CHUNK, deletion_batches
from hpo_operator.controller.builders import sidecar_rbac
from hpo_operator.controller.kube import KubeApi
from hpo_operator.sidecar.reporter import observation_patch
from hpo_trainer.metrics import MetricRecord


def make_pod(core, ns: str, experiment: str, trial: str, attempt: int, name: str = "") -> None:
    core.create_namespaced_pod(ns, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name or f"{trial}-{attempt}", "labels": {
            LABEL_EXPERIMENT: experiment, LABEL_TRIAL: trial, LABEL_ATTEMPT: str(attempt)}},
        "spec": {"automountServiceAccountToken": False, "containers": [{"name": "trainer", "image": "trainer"}]}})


def delete_runs(api: KubeApi, ns: str, experiment: str, runs, parts: int = 1) -> int:
    """Delete these runs' pods as the owner does; how many requests that took."""
    batches = deletion_batches(runs, parts)
    for attempt, trials in batches:
        api.delete_pods(ns, experiment, attempt, trials)
    return len(batches)


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
    delete_runs(KubeApi(kube_api), namespace, "exp", [("exp-0000", 1), ("exp-0001", 1), ("exp-0002", 3)])
    assert pod_names(core, namespace) == {"exp-0000-2", "other-0001-1"}


def test_more_runs_than_one_request_names_are_all_deleted(namespace, kube_api):
    core = client.CoreV1Api(kube_api)
    trials = [f"exp-{i:04d}" for i in range(DELETE_CHUNK + 5)]
    for trial in trials:
        make_pod(core, namespace, "exp", trial, 1)
    runs = [(t, 1) for t in trials[1:]]
    assert delete_runs(KubeApi(kube_api), namespace, "exp", runs) == 2  # DELETE_CHUNK trials a request
    assert pod_names(core, namespace) == {"exp-0000-1"}
    # A wave of 16 parallel requests splits them evenly (7 trials a request).
    for trial in trials:
        make_pod(core, namespace, "exp", trial, 2)
    assert delete_runs(KubeApi(kube_api), namespace, "exp", [(t, 2) for t in trials[1:]], parts=16) == 15
    assert pod_names(core, namespace) == {"exp-0000-1", "exp-0000-2"}


def test_an_append_of_a_run_judged_over_is_refused_and_the_fence_returns_what_landed(namespace, kube_api,
                                                                                       crds_installed):
    custom = client.CustomObjectsApi(kube_api)
    custom.create_namespaced_custom_object("hpo.dev", "v1alpha1", namespace, "hpotrials", {
        "apiVersion": "hpo.dev/v1alpha1", "kind": "HPOTrial", "metadata": {"name": "exp-0000"},
        "spec": {"experiment": "exp", "trialId": 0, "config": {}}})
    api = KubeApi(kube_api)
    api.patch_trial_status(namespace, "exp-0000", {"observations": [], "problems": [], "runFence": 0})

    def append(epoch: int) -> None:
        record = MetricRecord(epoch=epoch, objective="loss", value=0.5)
        custom.patch_namespaced_custom_object_status("hpo.dev", "v1alpha1", namespace, "hpotrials", "exp-0000",
                                                     observation_patch(record, attempt=1, fence=0),
                                                     _content_type="application/json-patch+json")

    append(1)  # the run's sidecar, started with runFence 0
    fenced = api.fence_trial(namespace, "exp-0000", 1)
    assert [o["epoch"] for o in fenced["status"]["observations"]] == [1]
    with pytest.raises(client.ApiException) as refused:
        append(2)  # in flight when its pod went: lands after the fence, and is refused
    assert refused.value.status == 422
    trial = custom.get_namespaced_custom_object("hpo.dev", "v1alpha1", namespace, "hpotrials", "exp-0000")
    assert [o["epoch"] for o in trial["status"]["observations"]] == [1] and trial["status"]["runFence"] == 1


def test_an_outdated_sidecar_role_gets_this_versions_rules(namespace, kube_api):
    rbac = client.RbacAuthorizationV1Api(kube_api)
    role = next(o for o in sidecar_rbac(namespace) if o["kind"] == "Role")
    old = {**role, "rules": [{"apiGroups": ["hpo.dev"], "resources": ["hpotrials"], "verbs": ["get"]}]}
    rbac.create_namespaced_role(namespace, old)  # as an earlier version left it
    # The owner must exist: the garbage collector deletes what an absent owner owns. A ConfigMap stands in
    # for the experiment (only its apiVersion, kind, name and uid go into the owner reference).
    owner = client.CoreV1Api(kube_api).create_namespaced_config_map(
        namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "exp"}})
    experiment = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": "exp", "namespace": namespace, "uid": owner.metadata.uid}}
    KubeApi(kube_api).ensure_sidecar_identity(experiment)
    current = rbac.read_namespaced_role(role["metadata"]["name"], namespace)
    assert kube_api.sanitize_for_serialization(current.rules) == role["rules"]
    assert [o.uid for o in current.metadata.owner_references] == [experiment["metadata"]["uid"]]


def test_a_pod_gone_is_known_to_have_existed_by_its_events_since_its_trial_was_created(namespace, kube_api):
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_event(namespace, {
        "metadata": {"generateName": "exp-0000-1."},
        "involvedObject": {"kind": "Pod", "namespace": namespace, "name": "exp-0000-1", "uid": "u"},
        "reason": "Scheduled", "message": "Successfully assigned", "type": "Normal"})
    core.create_namespaced_event(namespace, {  # about another kind of object of that name
        "metadata": {"generateName": "exp-0001-1."},
        "involvedObject": {"kind": "PersistentVolumeClaim", "namespace": namespace, "name": "exp-0001-1"},
        "reason": "ProvisioningSucceeded", "message": "provisioned", "type": "Normal"})
    api = KubeApi(kube_api)
    assert api.pod_existed(namespace, "exp-0000-1", "2020-01-01T00:00:00Z")
    # An Event from before the trial was created is of an earlier experiment of the same name.
    assert not api.pod_existed(namespace, "exp-0000-1", "2999-01-01T00:00:00Z")
    assert not api.pod_existed(namespace, "exp-0000-2", "2020-01-01T00:00:00Z")
    assert not api.pod_existed(namespace, "exp-0001-1", "2020-01-01T00:00:00Z")


def test_the_real_api_server_with_the_crds_installed_serves_everything_the_operator_watches(crds_installed,
                                                                                           kube_api):
    """The start-up wait (``KubeApi.unserved_resources``) reads the real discovery documents as kopf does."""
    assert KubeApi(kube_api).unserved_resources() == []
