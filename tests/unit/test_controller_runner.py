"""The runner's background work: a step's pod deletions go out at once and its launches as a follow-up, one
at a time; the next step's decisions wait for neither.

The API here is a TEST DOUBLE (``GatedApi``): the order of calls across two threads is what is tested, and a
real API server gives no way to hold a pod creation half-way. The calls themselves are exercised against
a real API server in the integration tier.
"""

from __future__ import annotations

import copy
import logging
import threading
import time

import kopf
import pytest
from kubernetes.client.rest import ApiException

from hpo_operator.controller.runner import ExperimentRunner

from test_controller_step import RecordingApi, running_pod, succeeded_pod

LOG = logging.getLogger("test")


class GatedApi(RecordingApi):
    """TEST DOUBLE of the API server for a whole runner step: records each call in order, keeps what was
    written, holds every pod creation until ``gate`` is set, and fails it with ``pod_error`` if one is set."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.pod_error: Exception | None = None
        self.pods: dict[str, dict] = {}

    def ensure_sidecar_identity(self, experiment):
        pass

    def list_pods(self, namespace, experiment):
        self.calls.append(("list pods",))
        return copy.deepcopy(self.pods)

    def list_trials(self, namespace, experiment):
        self.calls.append(("list trials",))
        return copy.deepcopy(list(self.created.values()))

    def get_trials(self, namespace, names):
        return [copy.deepcopy(self.created[name]) for name in names]

    def fence_trials(self, namespace, fences):
        for name, fence in fences.items():
            self.calls.append(("fence", name))
            self.created[name].setdefault("status", {})["runFence"] = fence
        return [copy.deepcopy(self.created[name]) for name in fences]

    def patch_experiment_status(self, namespace, name, status):
        pass

    def create(self, obj, dry_run=False):
        if obj["kind"] == "Pod" and not dry_run:
            assert self.gate.wait(10), "the test never let the pod creation through"
            if self.pod_error is not None:
                raise self.pod_error
            self.pods[obj["metadata"]["name"]] = running_pod()
        super().create(obj, dry_run)


@pytest.fixture
def quiet_kopf(monkeypatch):
    """kopf posts events only inside a running operator: the events posted, as (target name, reason, message)."""
    posted = []
    for name in ("event", "info", "warn"):
        monkeypatch.setattr(kopf, name, lambda target, *args, reason="", message="", **kwargs:
                            posted.append((target["name"] if "name" in target else target["metadata"]["name"],
                                           reason, message)))
    return posted


def experiment(manifest, **budget) -> dict:
    manifest["spec"]["budget"] = {"parallelism": 2, "maxTrials": 3, **budget}
    manifest["spec"]["scheduler"] = {"algorithm": "fifo", "maxResource": 3}
    return {"apiVersion": "hpo.dev/v1alpha1", "kind": "HPOExperiment",
            "metadata": {"name": "exp", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": manifest["spec"], "status": {}}


def completed(*trials: str) -> tuple[dict, dict]:
    """(observations, pods) as the caches show them once these trials' first runs trained all 3 epochs."""
    return ({t: [(1, 0.5), (2, 0.4), (3, 0.3)] for t in trials},
            {f"{t}-1": succeeded_pod() for t in trials})


def wait_for(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_decision_goes_out_while_the_last_steps_launches_are_in_flight(manifest, quiet_kopf):
    api, woken = GatedApi(), []
    runner = ExperimentRunner(api, "ns", "exp", wake=lambda: woken.append(True))
    body = experiment(manifest)
    runner.step(body, {}, {}, {}, LOG)
    wait_for(lambda: not runner.follow_up_in_flight)
    assert set(api.pods) == {"exp-0000-1", "exp-0001-1"}

    api.gate.clear()  # exp-0002's pod will hang in creation
    observations, pods = completed("exp-0000")
    runner.step(body, observations, {}, {**pods, "exp-0001-1": running_pod()}, LOG)
    wait_for(lambda: ("create trial", "exp-0002") in api.calls)
    assert runner.follow_up_in_flight

    observations, pods = completed("exp-0000", "exp-0001")
    runner.step(body, observations, {}, pods, LOG)
    # exp-0001's outcome is on record although exp-0002's pod is not created yet.
    assert ("status", "exp-0001", False) in api.calls
    assert "exp-0002-1" not in api.pods and runner.follow_up_in_flight
    assert runner.more_launches  # its free slot waits for the batch in flight

    # Its pod's deletion does not wait for the launches either.
    wait_for(lambda: ("delete pods", (("exp-0001", 1),)) in api.calls)

    api.gate.set()
    wait_for(lambda: not runner.follow_up_in_flight)
    assert api.calls.index(("status", "exp-0001", False)) < api.calls.index(("create", "Pod", "exp-0002-1"))
    assert api.calls.index(("status", "exp-0001", False)) < api.calls.index(("delete pods", (("exp-0001", 1),)))
    assert woken  # the follow-up's end asks for the next step


def test_a_stop_of_a_trial_still_being_launched_waits_for_its_pod(manifest, quiet_kopf):
    api = GatedApi()
    runner = ExperimentRunner(api, "ns", "exp")
    body = experiment(manifest, parallelism=1, maxDuration=1)
    api.gate.clear()
    runner.step(body, {}, {}, {}, LOG)
    wait_for(lambda: ("create trial", "exp-0000") in api.calls)
    time.sleep(1.1)  # maxDuration is up: the next step stops exp-0000, whose pod is still being created
    threading.Timer(0.3, api.gate.set).start()
    assert runner.step(body, {}, {}, {}, LOG)  # finished: time is up
    # Deleted after it was created: a pod created after its deletion would have kept running.
    assert api.calls.index(("create", "Pod", "exp-0000-1")) < api.calls.index(("delete pods", (("exp-0000", 1),)))
    assert api.created["exp-0000"]["status"]["phase"] == "Stopped"


def test_a_failed_launch_batch_makes_the_next_step_rebuild_and_launch_the_same_attempt(manifest, quiet_kopf):
    api = GatedApi()
    runner = ExperimentRunner(api, "ns", "exp")
    body = experiment(manifest, parallelism=1, maxRetries=0)
    api.pod_error = ApiException(status=500, reason="etcd timed out")
    runner.step(body, {}, {}, {}, LOG)
    wait_for(lambda: not runner.follow_up_in_flight)

    api.pod_error = None
    api.calls.clear()
    runner.step(body, {}, {}, {}, LOG)
    wait_for(lambda: not runner.follow_up_in_flight)
    # Rebuilt from the API: the trial recorded Running without a pod is fenced and launched again as the
    # same attempt, with no failure counted (maxRetries 0 would have failed it).
    assert api.calls[:3] == [("list pods",), ("list trials",), ("fence", "exp-0000")]
    assert ("create", "Pod", "exp-0000-1") in api.calls
    assert api.created["exp-0000"]["status"]["phase"] == "Running"
    assert api.created["exp-0000"]["status"].get("failures", 0) == 0



def test_normal_events_of_several_steps_go_out_together_and_warnings_at_once(manifest, quiet_kopf):
    api = GatedApi()
    runner = ExperimentRunner(api, "ns", "exp")
    body = experiment(manifest, maxRetries=0, maxFailedTrials=2)
    runner.step(body, {}, {}, {}, LOG)
    wait_for(lambda: not runner.follow_up_in_flight)
    running = {"exp-0000-1": running_pod(), "exp-0001-1": running_pod()}
    runner.step(body, {}, {}, running, LOG)
    # Both launches in one Event on the experiment, not one per trial.
    assert [(target, reason) for target, reason, _ in quiet_kopf] == [("exp", "Started")]
    assert "exp-0000" in quiet_kopf[0][2] and "exp-0001" in quiet_kopf[0][2]

    observations, pods = completed("exp-0000")
    runner.step(body, observations, {}, {**running, **pods}, LOG)
    assert [reason for _, reason, _ in quiet_kopf] == ["Started"]  # Completed is held (EVENT_PERIOD_SECONDS)
    failed = {"status": {"phase": "Failed", "containerStatuses": [
        {"name": "trainer", "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}, "deleting": False}
    # The slot exp-0000 freed went to exp-0002 in a follow-up; once it is done its Started is held too
    # (waiting makes the test independent of how fast the follow-up thread runs).
    wait_for(lambda: not runner.follow_up_in_flight)
    assert [reason for _, reason, _ in quiet_kopf] == ["Started"]
    runner.step(body, observations, {}, {**pods, "exp-0001-1": failed}, LOG)
    # A Warning is not held, and takes what was held with it.
    assert {(target, reason) for target, reason, _ in quiet_kopf[1:]} == {("exp-0000", "Completed"),
                                                                         ("exp-0002", "Started"),
                                                                         ("exp-0001", "Failed")}
