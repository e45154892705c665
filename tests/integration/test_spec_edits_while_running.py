"""Editing a running experiment with kubectl: the budget applies, a search-space change is refused.

The real operator process against the real API server; the node is the
kubelet TEST DOUBLE (tests/support/node_double.py) running the curve trainer
and the real sidecar.
"""

from __future__ import annotations

import json
import threading

import pytest

from support.curve_manifests import curve_manifest
from support.kube_tools import apply, experiment, kubectl, trials, wait_for
from support.node_double import NodeDouble

pytestmark = pytest.mark.timeout(300)


def running(api, ns) -> set[str]:
    return {t["metadata"]["name"] for t in trials(api, ns) if (t.get("status") or {}).get("phase") == "Running"}


def phase(api, ns, name):
    return (experiment(api, ns, name).get("status") or {}).get("phase")


def edit(cp, ns, name, spec_patch: dict) -> None:
    """What a user does: a merge patch of the experiment's spec."""
    kubectl(cp, "patch", "hpx", name, "-n", ns, "--type=merge", "-p", json.dumps({"spec": spec_patch}))


def events(cp, ns, reason: str) -> list[dict]:
    items = json.loads(kubectl(cp, "get", "events", "-n", ns, "-o", "json").stdout)["items"]
    return [e for e in items if e["reason"] == reason]


class ConcurrencyWatch:
    """Samples how many trials run at once, in the background, from a chosen moment on."""

    def __init__(self, api, ns):
        self.api, self.ns = api, ns
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, len(running(self.api, self.ns)))
            self._stop.wait(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


def test_parallelism_raised_then_lowered_applies_without_killing_a_run(crds_installed, namespace, kube_api,
                                                                       operator, tmp_path):
    doc = curve_manifest("widen", trials=9, parallelism=1, max_resource=4, algorithm="fifo", seconds=0.6)
    with NodeDouble(crds_installed, kube_api, namespace, tmp_path / "node") as node:
        apply(crds_installed, namespace, doc)
        wait_for(lambda: running(kube_api, namespace), 60, 0.2, "the first trial to run")
        with ConcurrencyWatch(kube_api, namespace) as before:
            wait_for(lambda: len(trials(kube_api, namespace)) >= 2, 60, 0.2, "a second trial")
        assert before.peak == 1  # parallelism 1: one at a time

        edit(crds_installed, namespace, "widen", {"budget": {"parallelism": 3}})
        wait_for(lambda: len(running(kube_api, namespace)) == 3, 60, 0.1, "three trials running at once")

        edit(crds_installed, namespace, "widen", {"budget": {"parallelism": 1}})
        wait_for(lambda: len(running(kube_api, namespace)) <= 1, 60, 0.1, "the running trials to drain to one")
        with ConcurrencyWatch(kube_api, namespace) as after:
            wait_for(lambda: phase(kube_api, namespace, "widen") in ("Succeeded", "Failed"), 180, 0.5,
                     "the experiment to finish")
        assert after.peak <= 1  # no new launch until below the lowered limit
        assert not node.errors, node.errors

    status = experiment(kube_api, namespace, "widen")["status"]
    assert status["phase"] == "Succeeded", status
    # Lowering parallelism stopped no run: every trial trained all its epochs, each in one pod.
    for t in trials(kube_api, namespace):
        assert t["status"]["phase"] == "Completed", t["status"]
        assert [o["epoch"] for o in t["status"]["observations"]] == [1, 2, 3, 4]
        assert t["status"]["attempts"] == 1
    assert status["trials"]["created"] == 9
    assert not events(crds_installed, namespace, "Stopped")
    assert "Traceback" not in operator.logs()


def test_max_trials_raised_creates_more_trials_and_the_experiment_finishes_with_them(
        crds_installed, namespace, kube_api, operator, tmp_path):
    doc = curve_manifest("grow", trials=3, parallelism=2, max_resource=3, algorithm="fifo", seconds=0.8)
    with NodeDouble(crds_installed, kube_api, namespace, tmp_path / "node") as node:
        apply(crds_installed, namespace, doc)
        wait_for(lambda: trials(kube_api, namespace), 60, 0.2, "the first trial")
        edit(crds_installed, namespace, "grow", {"budget": {"maxTrials": 6}})
        wait_for(lambda: phase(kube_api, namespace, "grow") in ("Succeeded", "Failed"), 180, 0.5,
                 "the experiment to finish")
        assert not node.errors, node.errors
    status = experiment(kube_api, namespace, "grow")["status"]
    assert status["phase"] == "Succeeded", status
    assert status["trials"]["created"] == 6 and status["trials"]["completed"] == 6
    assert [t["metadata"]["name"] for t in trials(kube_api, namespace)] == [f"grow-{i:04d}" for i in range(6)]
    assert status["acceptedSpec"]["maxTrials"] == 6
    assert not any(c["type"] == "SpecChangeRefused" for c in status["conditions"])


def test_search_space_change_is_refused_and_the_experiment_finishes_on_the_old_space(
        crds_installed, namespace, kube_api, operator, tmp_path):
    doc = curve_manifest("fixed", trials=5, parallelism=1, max_resource=3, algorithm="fifo", seconds=0.5)
    with NodeDouble(crds_installed, kube_api, namespace, tmp_path / "node") as node:
        apply(crds_installed, namespace, doc)
        wait_for(lambda: trials(kube_api, namespace), 60, 0.2, "the first trial")
        edit(crds_installed, namespace, "fixed", {"searchSpace": {
            "dropout": {"type": "uniform", "min": 0.0, "max": 0.5},
            "row": {"type": "randint", "min": 0, "max": 9}}})

        def refusal():
            conditions = (experiment(kube_api, namespace, "fixed").get("status") or {}).get("conditions") or []
            return next((c for c in conditions if c["type"] == "SpecChangeRefused" and c["status"] == "True"), None)
        cond = wait_for(refusal, 30, 0.2, "the SpecChangeRefused condition")
        assert cond["reason"] == "ImmutableFieldChanged"
        assert cond["message"].startswith("spec.searchSpace: ") and "create a new experiment" in cond["message"]
        warned = wait_for(lambda: events(crds_installed, namespace, "SpecChangeRefused"), 30, 0.5, "the event")
        assert warned[0]["type"] == "Warning" and "spec.searchSpace" in warned[0]["message"]
        assert warned[0]["involvedObject"]["name"] == "fixed"

        # A restarted operator still knows the accepted space (status.acceptedSpec) and refuses again, quietly.
        operator.kill()
        operator.start()
        wait_for(lambda: phase(kube_api, namespace, "fixed") in ("Succeeded", "Failed"), 180, 0.5,
                 "the experiment to finish")
        assert not node.errors, node.errors

    status = experiment(kube_api, namespace, "fixed")["status"]
    assert status["phase"] == "Succeeded", status
    assert status["trials"]["created"] == 5
    for t in trials(kube_api, namespace):  # every trial, before and after the edit, from the accepted space
        assert set(t["spec"]["config"]) == {"table", "row", "seconds_per_epoch"}, t["spec"]["config"]
    assert any(t["spec"]["config"]["row"] > 9 for t in trials(kube_api, namespace))  # the narrowed range was not used
    assert set(status["acceptedSpec"]["searchSpace"]) == {"table", "row", "seconds_per_epoch"}
    events_now = events(crds_installed, namespace, "SpecChangeRefused")
    assert len(events_now) == 1 and events_now[0].get("count", 1) == 1  # one event, not one per step
    assert "Traceback" not in operator.logs()
