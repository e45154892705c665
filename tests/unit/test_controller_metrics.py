"""The operator's Prometheus metrics: what a step counts (its plan's tally), what an owner feeds the series, the
API requests' verb and resource, and the endpoint's settings.

The owner tests use the TEST DOUBLE ``support.api_double.RecordingApi`` (as test_controller_owner.py does); the
integration tier scrapes the same series from a real ``kopf run`` operator against a real API server
(tests/integration/test_operator_metrics.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from hpo_operator.controller import metrics
from hpo_operator.controller.owner import ExperimentOwner, Seen
from support.api_double import RecordingApi, running_pod, succeeded_pod

from test_controller_reconcile import World

LOG = logging.getLogger("test")


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ---- what a step counts -----------------------------------------------------------------------------
def run_to_the_end(world: World, seed: int) -> dict[str, Counter]:
    """Play the sidecars and pods until the experiment ends: each running pod reports one epoch a step, and
    exits once it reached its run's ``until``. Returns the plans' tallies, launches and events, added up."""
    rng = random.Random(seed)
    seen = {k: Counter() for k in ("decisions", "run_ends", "launches", "events", "reported")}
    for _ in range(500):
        plan = world.step()
        seen["decisions"].update(plan.decisions)
        seen["run_ends"].update(plan.run_ends)
        seen["launches"].update(launch.reason for launch in plan.launches)
        seen["events"].update(event.reason for event in plan.events)
        if world.status["phase"] != "Running":
            return seen
        for pod, obj in list(world.pods.items()):
            trial = pod.rsplit("-", 1)[0]
            status = world.trials[trial]["status"]
            if obj["status"]["phase"] != "Running" or status.get("pod") != pod:
                continue
            if len(status["observations"]) < status["until"]:
                world.report(trial, rng.random())
                seen["reported"]["observations"] += 1
            else:
                world.pod_ends(trial)
    raise AssertionError("the experiment did not end")


@pytest.mark.parametrize("asha_type", ["promotion", "promotion-in-place", "stopping"])
def test_a_plan_counts_one_decision_per_observation_and_every_launch_and_run_end(manifest, asha_type):
    manifest["spec"]["scheduler"] = {"algorithm": "asha", "type": asha_type.split("-")[0], "maxResource": 9,
                                     "promoteInPlace": asha_type.endswith("in-place")}
    seen = run_to_the_end(World(manifest, maxTrials=12, parallelism=3), seed=3)
    decisions, ends, launches, events = seen["decisions"], seen["run_ends"], seen["launches"], seen["events"]
    assert sum(decisions.values()) == seen["reported"]["observations"]  # each observation: one scheduler call
    assert decisions["pause"] == events["Paused"] and decisions["promote"] == events["PromotedInPlace"]
    assert launches["new"] == events["Started"] == 12 and launches["resume"] == events["Resumed"]
    assert ends["completed"] == events["Completed"] and ends["stopped"] == decisions["stop"]
    # Every run launched ended, one way or another.
    assert sum(ends.values()) == sum(launches.values()), (ends, launches)
    if asha_type == "promotion":
        assert decisions["pause"] and ends["paused"] == decisions["pause"] and launches["resume"]
    elif asha_type == "promotion-in-place":
        assert decisions["promote"]
    else:
        assert decisions["stop"] and not decisions["pause"]


def test_a_plan_counts_retries_failures_and_the_runs_the_budget_stops(manifest):
    manifest["spec"]["scheduler"] = {"algorithm": "fifo", "maxResource": 9}
    world = World(manifest, maxRetries=1, maxFailedTrials=5, maxDuration="1h")
    world.step()
    world.pod_ends("exp-0000", "Failed", exit_code=137)
    assert world.step().run_ends == {"retried": 1}
    world.pod_ends("exp-0000", "Failed", exit_code=1)
    assert world.step().run_ends == {"failed": 1}
    world.now += timedelta(hours=1, seconds=1)
    plan = world.step()
    assert plan.run_ends == {"stopped": 2} and world.status["phase"] == "Failed"  # exp-0001, exp-0002; no result


# ---- what the owner feeds the series ----------------------------------------------------------------
def fifo_experiment(manifest, namespace: str) -> dict:
    manifest["spec"]["budget"] = {"parallelism": 2, "maxTrials": 3}
    manifest["spec"]["scheduler"] = {"algorithm": "fifo", "maxResource": 3}
    return {"apiVersion": "hpo.dev/v1alpha1", "kind": "HPOExperiment",
            "metadata": {"name": "exp", "namespace": namespace, "uid": "u", "generation": 1},
            "spec": manifest["spec"], "status": {}}


def test_an_owner_counts_its_steps_and_a_deleted_experiment_drops_its_series(manifest, quiet_kopf, monkeypatch):
    ns = f"m-{uuid.uuid4().hex[:6]}"  # the registry is the process's: series of a namespace of its own
    labels = {"namespace": ns, "experiment": "exp"}
    steps_before = sample("hpo_step_duration_seconds_count")
    latencies_before = sample("hpo_decision_latency_seconds_count")
    starts_before = sample("hpo_state_rebuilds_total", reason="start")

    async def scenario():
        api = RecordingApi()
        owner = ExperimentOwner(api, ns, "exp", LOG)
        body = fifo_experiment(manifest, ns)
        await owner.step(Seen(body, {}, {}, {}))
        await owner.settle()
        assert sample("hpo_launches_total", **labels, reason="new") == 2
        assert sample("hpo_trials", **labels, phase="Running") == 2
        assert sample("hpo_state_rebuilds_total", reason="start") == starts_before + 1

        # exp-0000 trained its 3 epochs and exited; the watch showed them half a second ago (the trials' index
        # function notes each event), and exp-0001's first epoch just now, after the caches were read.
        with monkeypatch.context() as m:
            m.setattr(metrics.ARRIVALS, "clock", lambda: time.monotonic() - 0.5)
            metrics.ARRIVALS.note((ns, "exp"), "exp-0000", 3)
        metrics.ARRIVALS.note((ns, "exp"), "exp-0001", 1)
        observations = {"exp-0000": [(1, 0.5), (2, 0.4), (3, 0.3)]}
        pods = {"exp-0000-1": succeeded_pod(), "exp-0001-1": running_pod()}
        await owner.step(Seen(body, observations, {}, pods))
        await owner.settle()
        assert sample("hpo_observations_ingested_total", **labels) == 3
        assert sample("hpo_decisions_total", **labels, kind="continue") == 3
        assert sample("hpo_run_ends_total", **labels, outcome="completed") == 1
        assert sample("hpo_launches_total", **labels, reason="new") == 3
        assert {p: sample("hpo_trials", **labels, phase=p) for p in ("Running", "Completed", "Pending")} == \
            {"Running": 2, "Completed": 1, "Pending": 0}
        # One sample: exp-0001's epoch was seen too, but not in the caches this step read.
        assert sample("hpo_decision_latency_seconds_count") == latencies_before + 1
        assert sample("hpo_decision_latency_seconds_sum") >= 0.5
        # The next step acts on it, as seen then.
        await owner.step(Seen(body, {**observations, "exp-0001": [(1, 0.5)]}, {}, pods))
        await owner.settle_writes()
        assert sample("hpo_decision_latency_seconds_count") == latencies_before + 2

    asyncio.run(scenario())
    assert sample("hpo_step_duration_seconds_count") == steps_before + 3
    metrics.forget(ns, "exp")
    assert not [s for family in REGISTRY.collect() for s in family.samples if s.labels.get("namespace") == ns]


def test_a_failed_step_is_counted_as_a_retry_and_the_next_rebuilds_in_recovery(manifest, quiet_kopf):
    from kubernetes.client.rest import ApiException

    ns = f"m-{uuid.uuid4().hex[:6]}"
    retries, recoveries = sample("hpo_step_retries_total"), sample("hpo_state_rebuilds_total", reason="recovery")

    class FailingOnce(RecordingApi):
        fail = False

        def patch_trial_status(self, *args):
            if self.fail:
                self.fail = False
                raise ApiException(status=500, reason="etcd timed out")
            return super().patch_trial_status(*args)

    async def scenario():
        api = FailingOnce()
        owner = ExperimentOwner(api, ns, "exp", LOG)
        body = fifo_experiment(manifest, ns)
        await owner.step(Seen(body, {}, {}, {}))
        await owner.settle()
        api.fail = True  # the write of exp-0000's end fails: the step is retried, from a rebuilt state
        seen = Seen(body, {"exp-0000": [(1, 0.5), (2, 0.4), (3, 0.3)]}, {},
                    {"exp-0000-1": succeeded_pod(), "exp-0001-1": running_pod()})
        run = asyncio.ensure_future(owner.run(lambda: seen, asyncio.Event(), interval=0.05, batch=0.01))
        while sample("hpo_state_rebuilds_total", reason="recovery") == recoveries:
            await asyncio.sleep(0.05)
        # The ended run's pod goes only once its end is on record (the failed write held it back).
        while ("delete pods", (("exp-0000", 1),)) not in api.calls:
            await asyncio.sleep(0.05)
        run.cancel()
        assert api.calls.index(("status", "exp-0000", False)) < api.calls.index(("delete pods", (("exp-0000", 1),)))

    asyncio.run(asyncio.wait_for(scenario(), 20))
    metrics.forget(ns, "exp")


# ---- API requests ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method, url, expected", [
    ("GET", "https://h:6443/api/v1/namespaces/ns/pods?labelSelector=x", ("list", "pods")),
    ("POST", "https://h:6443/api/v1/namespaces/ns/pods?dryRun=All", ("create", "pods")),
    ("DELETE", "https://h:6443/api/v1/namespaces/ns/pods?labelSelector=a", ("deletecollection", "pods")),
    ("GET", "https://h:6443/apis/hpo.dev/v1alpha1/namespaces/ns/hpotrials/exp-0001", ("get", "hpotrials")),
    ("PATCH", "https://h:6443/apis/hpo.dev/v1alpha1/namespaces/ns/hpotrials/exp-0001/status",
     ("patch", "hpotrials/status")),
    ("POST", "https://h/apis/rbac.authorization.k8s.io/v1/namespaces/ns/roles", ("create", "roles")),
    ("GET", "https://h/apis/storage.k8s.io/v1/storageclasses", ("list", "storageclasses")),
    ("GET", "https://h/api/v1/namespaces/ns", ("get", "namespaces")),
    ("GET", "https://h/apis/hpo.dev/v1alpha1", ("get", "discovery")),
    ("GET", "https://rancher/k8s/clusters/c-1/api/v1/namespaces/ns/pods/p", ("get", "pods")),
    ("GET", "https://h/healthz", ("get", "other")),
])
def test_a_requests_verb_and_resource_come_from_its_method_and_path(method, url, expected):
    assert metrics.verb_and_resource(method, url) == expected


def test_each_request_is_counted_with_its_answers_status_code():
    from kubernetes.client.rest import ApiException

    class Answer:
        status = 201

    def request(method, url, **_):
        if "missing" in url:
            raise ApiException(status=404, reason="Not Found")
        if "down" in url:
            raise ConnectionError("refused")
        return Answer()

    counted = metrics.count_requests(request)
    ns = f"m-{uuid.uuid4().hex[:6]}"
    before = {code: sample("hpo_api_requests_total", verb="create", resource="pods", code=code)
              for code in ("201", "404", "error")}
    counted("POST", f"https://h/api/v1/namespaces/{ns}/pods")
    with pytest.raises(ApiException):
        counted("POST", f"https://h/api/v1/namespaces/{ns}-missing/pods")
    with pytest.raises(ConnectionError):
        counted("POST", f"https://h/api/v1/namespaces/{ns}-down/pods")
    assert {code: sample("hpo_api_requests_total", verb="create", resource="pods", code=code) - before[code]
            for code in before} == {"201": 1, "404": 1, "error": 1}


# ---- the endpoint's settings -------------------------------------------------------------------------
@pytest.mark.parametrize("raw", ["eighty", "-1", "70000"])
def test_a_bad_metrics_port_names_the_variable_and_the_fix(monkeypatch, raw):
    monkeypatch.setenv("HPO_METRICS_PORT", raw)
    with pytest.raises(ValueError, match=r"HPO_METRICS_PORT=.*0 to serve no metrics"):
        metrics.port_from_environment()


def test_the_metrics_port_defaults_and_zero_turns_the_endpoint_off(monkeypatch):
    monkeypatch.delenv("HPO_METRICS_PORT", raising=False)
    assert metrics.port_from_environment() == metrics.DEFAULT_PORT
    monkeypatch.setenv("HPO_METRICS_PORT", "0")
    assert metrics.port_from_environment() == 0


def test_a_taken_port_says_which_variable_to_change():
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        with pytest.raises(OSError, match=r"set HPO_METRICS_PORT to a free port"):
            metrics.serve(taken.getsockname()[1])


def test_arrivals_keep_when_each_observation_was_first_seen_until_a_step_acts_on_it():
    clock = iter(range(100)).__next__
    arrivals = metrics.Arrivals(clock=lambda: float(clock()))
    key = ("ns", "exp")
    arrivals.note(key, "t0", 1)  # seen at 0
    arrivals.note(key, "t0", 1)  # the operator's own status write: nothing new
    arrivals.note(key, "t0", 3)  # epochs 2 and 3, seen at 1
    arrivals.note(key, "t1", 0)  # an event with no observation
    assert arrivals.waiting(key) == ["t0"]
    assert arrivals.acted(key, {"t0": (0, 2)}) == [0.0]  # epochs 1 and 2: the first seen at 0
    assert arrivals.acted(key, {"t0": (2, 3)}) == [1.0]  # epoch 3, seen at 1 (with epoch 2)
    assert arrivals.waiting(key) == []
    assert arrivals.acted(key, {"t0": (3, 4)}) == []  # acted on before any event showed it
    arrivals.note(key, "t0", 4)
    arrivals.forget(key)
    assert arrivals.waiting(key) == []


def test_a_batch_histogram_reads_like_the_librarys_own():
    from prometheus_client import CollectorRegistry, Histogram
    from prometheus_client.exposition import generate_latest

    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batch = metrics.BatchHistogram("latency_seconds", "help", (0.1, 1, 10), registry=ours)
    library = Histogram("latency_seconds", "help", buckets=(0.1, 1, 10), registry=theirs)
    values = [0.05, 0.1, 0.5, 1.0, 3, 10, 11, 0]  # on a bound: in that bucket (le)
    batch.observe_all(values[:3])
    batch.observe_all(values[3:])
    for v in values:
        library.observe(v)
    def page(registry):  # (the library's adds a _created time)
        return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]

    assert page(ours) == page(theirs)
    assert ours.get_sample_value("latency_seconds_bucket", {"le": "1.0"}) == 5


def test_docs_list_every_metric_with_its_labels():
    from support.paths import REPO

    table = {line.split("|")[1].strip().strip("`"): line.split("|")[3]
             for line in (REPO / "docs" / "operator.md").read_text().splitlines() if line.startswith("| `hpo_")}
    from prometheus_client.metrics import MetricWrapperBase

    defined = {}
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):  # (its label names are not public)
            defined[metric._name + ("_total" if metric._type == "counter" else "")] = metric._labelnames
        elif isinstance(metric, metrics.BatchHistogram):
            defined[metric.name] = ()
    assert len(defined) == 10 and set(defined) == set(table), (set(defined) ^ set(table))
    for name, labels in defined.items():
        assert all(f"`{label}`" in table[name] for label in labels), (name, labels, table[name])
