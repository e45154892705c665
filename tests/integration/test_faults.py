"""An experiment survives what clusters do to it (faults from tests/support/faults.py).

The real API server, the operator as a real `kopf run` process, the kubelet
TEST DOUBLE running the real sidecar, and the faults injected at seeded random
moments. The audit compares every trainer's metrics file with the trials'
records, checks the experiment ended soundly and, one trial at a time, its
decisions with the undisturbed run's (the simulator's); in parallel, timing
decides them, so that comparison does not apply and every other check does.
"""

from __future__ import annotations

import json
import time

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from support.curve_manifests import curve_manifest
from support.fault_proxy import FaultProxy
from support.faults import Experiment, FaultPlan, ScenarioResult, run_scenario
from support.kube_tools import apply, install_crds, kubectl, trials, wait_for
from support.operator_process import Operator

pytestmark = pytest.mark.timeout(600)


def test_experiment_survives_every_fault_at_once(crds_installed, namespace, kube_api, tmp_path):
    plan = FaultPlan("chaos", seed=1, operator_kills=5, pod_deletions=2, crash_rate=0.2, kubelet_restarts=1,
                     apiserver_restarts=1, meddler=True, proxy_fault_rate=0.25)
    result = run_scenario(crds_installed, kube_api, namespace, tmp_path, plan)
    f, injected = result.findings, result.injected
    # every fault was really dealt out
    assert injected["operator SIGKILL"] == 5 and injected["pod deleted"] == 2, injected
    assert injected["kubelet restart"] == 1 and injected["API server restart"] == 1, injected
    assert injected["trainer crash"] >= 1 and injected["meddler conflict"] >= 1, injected
    assert sum(n for k, n in injected.items() if k.startswith("status write answer lost")) >= 3, injected
    assert f.expected_failures >= 3, f  # deletions, crashes and the lost runs ended runs early
    assert_survived(result)
    assert f.transient and f.best_same and f.decisions_same, f


def test_experiment_running_trials_in_parallel_survives_every_fault_at_once(crds_installed, namespace, kube_api,
                                                                            tmp_path):
    """Four at a time: which trials a rung promotes depends on when results arrive, so the decisions are not
    the simulator's; every record, pod, failure count and the end must still be exact."""
    plan = FaultPlan("parallel", seed=1, operator_kills=3, pod_deletions=3, crash_rate=0.2, kubelet_restarts=1,
                     apiserver_restarts=1, meddler=True, proxy_fault_rate=0.25)
    result = run_scenario(crds_installed, kube_api, namespace, tmp_path, plan, Experiment(trials=16, parallelism=4))
    f, injected = result.findings, result.injected
    assert injected["operator SIGKILL"] == 3 and injected["pod deleted"] == 3, injected
    assert injected["kubelet restart"] == 1 and injected["API server restart"] == 1, injected
    assert injected["trainer crash"] >= 1 and injected["meddler write"] >= 1, injected
    assert sum(n for k, n in injected.items() if k.startswith("status write answer lost")) >= 3, injected
    assert f.expected_failures >= 5, f  # the deletions, the crashes and the kubelet's several lost runs
    assert result.most_pods_at_once >= 4, "never ran four trials at once"
    assert_survived(result)
    assert not f.comparable and f.decisions_same is None and f.best_same is None, f


def assert_survived(result: ScenarioResult) -> None:
    """Nothing lost, recorded twice or miscounted, and the experiment ended soundly."""
    f = result.findings
    assert not result.problems, result.problems
    assert result.phase == "Succeeded"
    assert f.observations > 0
    assert (f.lost, f.duplicated, f.phantom, f.duplicate_pods) == ([], [], [], [])
    assert f.not_from_checkpoint == [] and f.epochs_repeated_events == 0
    assert f.wrong_failures == [] and f.wrong_retry_outcome == [] and f.wrong_counts == []
    assert f.unsound_end == []
    assert f.clean, f


def test_the_proxy_applies_a_write_and_loses_its_answer(crds_installed, namespace, kube_api):
    """The fault injector's premise: the client sees an error although its write happened."""
    custom = client.CustomObjectsApi(kube_api)
    trial = {"apiVersion": "hpo.dev/v1alpha1", "kind": "HPOTrial", "metadata": {"name": "t-0000"},
             "spec": {"experiment": "t", "trialId": 0, "config": {}}}
    custom.create_namespaced_custom_object("hpo.dev", "v1alpha1", namespace, "hpotrials", trial)
    with FaultProxy(crds_installed.server, rate=1.0, seed=0) as proxy:
        cfg = client.Configuration()
        cfg.host = proxy.url
        cfg.api_key = {"authorization": f"Bearer {crds_installed.token}"}
        through_proxy = client.CustomObjectsApi(client.ApiClient(cfg))
        errors = 0
        for epoch in (1, 2, 3, 4, 5, 6):
            patch = [{"op": "add", "path": "/status", "value": {"observations": []}}] if epoch == 1 else []
            patch.append({"op": "add", "path": "/status/observations/-", "value": {"epoch": epoch, "value": 0.5}})
            try:
                through_proxy.patch_namespaced_custom_object_status(
                    "hpo.dev", "v1alpha1", namespace, "hpotrials", "t-0000", patch,
                    _content_type="application/json-patch+json")
            except ApiException as err:
                errors += 1
                assert err.status in (409, 500), err
            except Exception:  # the dropped connection
                errors += 1
    assert errors == 6 and sum(proxy.injected.values()) == 6
    stored = custom.get_namespaced_custom_object("hpo.dev", "v1alpha1", namespace, "hpotrials", "t-0000")
    assert [o["epoch"] for o in stored["status"]["observations"]] == [1, 2, 3, 4, 5, 6], json.dumps(stored)


def test_an_operator_started_during_an_api_server_outage_serves_experiments_once_it_is_back(
        crds_installed, namespace, kube_api, tmp_path):
    """kopf looks up the resources it watches once at start; started against an API server that is down (or
    up but not yet listing the CRDs' resources), it must wait for them instead of never watching them."""
    apply(crds_installed, namespace, curve_manifest("outage", trials=2, parallelism=2))
    operator = Operator(crds_installed, namespace, tmp_path)
    crds_installed.stop_apiserver()
    try:
        operator.start()
        time.sleep(4)
        crds_installed.start_apiserver()
        try:
            wait_for(lambda: len(trials(kube_api, namespace)) == 2, timeout=60, what="the operator creating the trials")
        except AssertionError as err:
            raise AssertionError(f"{err}; the operator's log:\n{operator.logs()}") from None
        assert operator.proc.poll() is None, operator.logs()
        assert "Waiting for the API server to serve" in operator.logs()
    finally:
        operator.stop()


def test_the_operator_keeps_serving_when_its_resources_are_unserved_for_a_while(crds_installed, namespace, kube_api,
                                                                                tmp_path):
    """A restarting API server answers "404 page not found" for the CRDs' resources until it has loaded them
    (it listens first), and so does one whose CRDs are re-installed: a watch reconnecting in that window must
    wait for them, not end the operator. A restart hits the window by chance; the re-install always does."""
    operator = Operator(crds_installed, namespace, tmp_path)
    operator.start()
    try:
        def serve(name: str) -> None:
            apply(crds_installed, namespace, curve_manifest(name, trials=2, parallelism=2))
            try:
                wait_for(lambda: sum(t["spec"]["experiment"] == name for t in trials(kube_api, namespace)) == 2,
                         timeout=90, what=f"the operator creating {name}'s trials")
            except AssertionError as err:
                raise AssertionError(f"{err}; the operator's log:\n{operator.logs()}") from None

        serve("before")  # the operator is watching
        pid = operator.proc.pid
        crds_installed.restart_apiserver()
        kubectl(crds_installed, "delete", "crd", "hpotrials.hpo.dev", "--wait=true")
        try:  # the operator, started afresh, waits for the trials to be served again
            wait_for(lambda: "Waiting for the API server to serve hpotrials" in operator.logs(), timeout=60,
                     what="the operator waiting for its trials to be served")
            assert operator.proc.poll() is None and operator.proc.pid == pid, operator.logs()
        finally:
            install_crds(crds_installed)
        serve("after")
        assert operator.proc.poll() is None and operator.proc.pid == pid, operator.logs()
    finally:
        operator.stop()
