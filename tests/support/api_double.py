"""TEST DOUBLE of the Kubernetes API (``hpo_operator.controller.api.Api``) for the experiment owner's
unit tests: it records each call in order, keeps what was written, and can hold every pod creation
(``gate``) or fail it (``pod_error``). A real API server gives no way to hold a pod creation half-way,
which is what the order of calls across the owner's lanes is tested with; the calls themselves are
exercised against a real API server in the integration tier."""

from __future__ import annotations

import copy
import threading
from typing import Optional


def running_pod() -> dict:
    return {"status": {"phase": "Running"}, "deleting": False}


def succeeded_pod() -> dict:
    return {"status": {"phase": "Succeeded", "containerStatuses": [
        {"name": "trainer", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}, "deleting": False}


class RecordingApi:
    def __init__(self, binds_at_once: bool = False):
        self.calls: list[tuple] = []
        self.created: dict[str, dict] = {}  # trials
        self.pods: dict[str, dict] = {}
        self.experiment_status: dict = {}
        self.binding = binds_at_once
        self.gate = threading.Event()  # pod creations wait for it
        self.gate.set()
        self.deletion_gate = threading.Event()  # pod deletions wait for it
        self.deletion_gate.set()
        self.pod_error: Optional[Exception] = None
        self.pods_that_existed: set[str] = set()  # pods Kubernetes has Events of (``pod_existed``)
        self.held_status: dict[str, threading.Event] = {}  # trial -> its next status write waits for this

    def ensure_sidecar_identity(self, experiment):
        pass

    def list_trials(self, namespace, experiment):
        self.calls.append(("list trials",))
        return copy.deepcopy(list(self.created.values()))

    def list_pods(self, namespace, experiment):
        self.calls.append(("list pods",))
        return copy.deepcopy(self.pods)

    def pod_existed(self, namespace, pod, since):
        self.calls.append(("events of", pod))
        return pod in self.pods_that_existed

    def get_trial(self, namespace, name):
        return copy.deepcopy(self.created[name])

    def fence_trial(self, namespace, name, fence):
        self.calls.append(("fence", name))
        self.created[name].setdefault("status", {})["runFence"] = fence
        return copy.deepcopy(self.created[name])

    def create_trial(self, obj):
        name = obj["metadata"]["name"]
        self.calls.append(("create trial", name))
        if name in self.created:
            return copy.deepcopy(self.created[name]), False
        self.created[name] = {**obj, "metadata": {**obj["metadata"], "uid": f"uid-{name}"}}
        return copy.deepcopy(self.created[name]), True

    def hold_status(self, trial: str) -> threading.Event:
        """Hold ``trial``'s next status write until the event returned is set."""
        self.held_status[trial] = threading.Event()
        return self.held_status[trial]

    def patch_trial_status(self, namespace, name, patch):
        held = self.held_status.pop(name, None)
        if held is not None:
            assert held.wait(10), f"the test never let {name}'s status write through"
        self.calls.append(("status", name, "observations" in patch))
        self.created[name].setdefault("status", {}).update(copy.deepcopy(patch))

    def patch_experiment_status(self, namespace, name, status):
        self.experiment_status.update(copy.deepcopy(status))

    def create_pod(self, pod, dry_run=False):
        if dry_run:
            return
        assert self.gate.wait(10), "the test never let the pod creation through"
        if self.pod_error is not None:
            raise self.pod_error
        self.pods[pod["metadata"]["name"]] = running_pod()
        self.calls.append(("create", "Pod", pod["metadata"]["name"]))

    def create_claim(self, claim):
        self.calls.append(("create", "PersistentVolumeClaim", claim["metadata"]["name"]))

    def delete_pods(self, namespace, experiment, attempt, trials):
        assert self.deletion_gate.wait(10), "the test never let the pod deletion through"
        self.calls.append(("delete pods", tuple((trial, attempt) for trial in trials)))
        for trial in trials:
            self.pods.pop(f"{trial}-{attempt}", None)

    def delete_claims(self, namespace, experiment, trials):
        self.calls.append(("delete claims", tuple(trials)))

    def binds_at_once(self, storage_class):
        return self.binding

    def wait_bound(self, namespace, claims, timeout):
        self.calls.append(("wait bound", tuple(claims)))
