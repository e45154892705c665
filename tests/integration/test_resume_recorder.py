"""bench/resume_latency.py's recorder against a real API server: trials, pods and Events arrive as records.

No kubelet here, so the pod's status is written by the test as a kubelet
would, and reading its log fails: the recorder notes that and goes on.
"""

from __future__ import annotations

import sys
import time

from kubernetes import client

from support.kube_tools import wait_for
from support.paths import REPO

sys.path.insert(0, str(REPO / "bench"))

from resume_latency import Recording, Watcher  # noqa: E402

TRIAL, POD = "exp-0003", "exp-0003-2"


def test_the_recorder_sees_a_resume_as_it_happens(crds_installed, kube_api, namespace, tmp_path):
    core, custom = client.CoreV1Api(kube_api), client.CustomObjectsApi(kube_api)
    recording = Recording(tmp_path / "recording.jsonl")
    watcher = Watcher(kube_api, namespace, recording)
    watcher.start()
    try:
        custom.create_namespaced_custom_object("hpo.dev", "v1alpha1", namespace, "hpotrials", {
            "apiVersion": "hpo.dev/v1alpha1", "kind": "HPOTrial", "metadata": {"name": TRIAL},
            "spec": {"experiment": "exp", "trialId": 3, "bracket": 0, "config": {}}})
        custom.patch_namespaced_custom_object_status("hpo.dev", "v1alpha1", namespace, "hpotrials", TRIAL, {
            "status": {"phase": "Running", "pod": POD, "until": 2, "decidedEpoch": 1,
                       "observations": [{"epoch": 1, "value": 0.5, "attempt": 1}]}})
        core.create_namespaced_event(namespace, {
            "metadata": {"generateName": "exp-"}, "involvedObject": {"kind": "HPOTrial", "name": TRIAL,
                                                                   "namespace": namespace},
            "reason": "Resumed", "message": f"epochs 2..2 in pod {POD}", "type": "Normal"})
        # Admission refuses a pod until the token controller has given the default ServiceAccount its
        # token (a 500 "No API token found"), which comes a moment after the account itself.
        wait_for(lambda: any(sa.secrets for sa in core.list_namespaced_service_account(namespace).items
                             if sa.metadata.name == "default"), 30, what="the default ServiceAccount's token")
        core.create_namespaced_pod(namespace, {
            "metadata": {"name": POD}, "spec": {"nodeName": "node-1", "containers": [
                {"name": "trainer", "image": "hpo-trainer:e2e"}]}})
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        core.patch_namespaced_pod_status(POD, namespace, {"status": {"phase": "Running", "containerStatuses": [
            {"name": "trainer", "ready": True, "restartCount": 0, "image": "hpo-trainer:e2e", "imageID": "",
             "state": {"running": {"startedAt": now}}}]}})

        def seen(kind, **fields):
            return [r for r in list(recording.records)
                    if r["kind"] == kind and all(r.get(k) == v for k, v in fields.items())]

        wait_for(lambda: seen("trial", name=TRIAL, pod=POD, until=2, decided=1), 30, what="the trial's status")
        wait_for(lambda: seen("event", name=TRIAL, reason="Resumed"), 30, what="the Event")
        wait_for(lambda: seen("pod", name=POD, scheduled=True, trainer="running"), 30, what="the running pod")
        wait_for(lambda: seen("error", what=f"log of {POD}"), 30, what="the log follower to give up")
        core.delete_namespaced_pod(POD, namespace, grace_period_seconds=0)
        wait_for(lambda: seen("pod", name=POD, deleted=True), 30, what="the deletion")
        # The watches end every 5 s and start again; an Event listed again is not recorded again (each
        # would count as another resume).
        time.sleep(12)
        assert len(seen("event", name=TRIAL, reason="Resumed")) == 1
    finally:
        started = time.monotonic()
        watcher.close()
        recording.close()
    assert time.monotonic() - started < 20  # the watches end within their timeout
    assert not any(t.is_alive() for t in watcher.threads)
    assert seen("trial", name=TRIAL, pod=POD)[0]["observations"] == [[1, 1]]
    assert (tmp_path / "recording.jsonl").read_text().count("\n") == len(recording.records)
