"""How experiments end, on a real API server: the best trial when higher is better, a Failed experiment's
other pods, which checkpoint claims stay, and one shared claim with a sub-path per trial."""

from __future__ import annotations

import pytest
from kubernetes import client

from hpo_operator.sim import LearningCurveTable, simulate
from hpo_operator.spec.experiment import SchedulerSpec
from support.curve_manifests import node_manifest
from support.kube_tools import apply, experiment, finished, trials, wait_for
from support.node_double import NodeDouble
from support.paths import TABLES

TABLE = TABLES / "digits_s44.json"
pytestmark = pytest.mark.timeout(300)


def manifest(name: str, *, trials: int, parallelism: int, max_resource: int, algorithm: str = "fifo",
             seconds_per_epoch: float = 0.0, **budget) -> dict:
    return node_manifest(name, trials=trials, parallelism=parallelism, seconds_per_epoch=seconds_per_epoch,
                         scheduler={"algorithm": algorithm, "maxResource": max_resource}, **budget)


def run_to_the_end(cp, api, ns, doc, node: NodeDouble, timeout: float = 240) -> dict:
    apply(cp, ns, doc)
    name = doc["metadata"]["name"]
    wait_for(lambda: finished(api, ns, name), timeout, 0.5, f"{name} to end")
    assert not node.errors, node.errors
    return experiment(api, ns, name)["status"]


def last_value(trial: dict) -> float:
    return trial["status"]["observations"][-1]["value"]


def claims(api, ns) -> dict[str, bool]:
    """Claim name -> whether it is being deleted (no controller here removes its protection finalizer)."""
    items = client.CoreV1Api(api).list_namespaced_persistent_volume_claim(ns).items
    return {c.metadata.name: c.metadata.deletion_timestamp is not None for c in items}


def test_with_mode_max_the_highest_value_is_the_best_trial(crds_installed, namespace, kube_api, operator, tmp_path):
    doc = manifest("highest", trials=4, parallelism=4, max_resource=3)
    doc["spec"]["objective"]["mode"] = "max"
    with NodeDouble(crds_installed, kube_api, namespace, tmp_path / "node") as node:
        status = run_to_the_end(crds_installed, kube_api, namespace, doc, node)
    assert status["phase"] == "Succeeded", status
    done = {t["metadata"]["name"]: last_value(t) for t in trials(kube_api, namespace)}
    assert len(done) == 4 and len(set(done.values())) > 1, done  # distinct values: the ranking means something
    best = min(done, key=lambda name: (-done[name], name))  # the highest value; a tie goes to the lower id
    assert status["best"]["trial"] == best and status["best"]["value"] == done[best], (status["best"], done)
    for t in trials(kube_api, namespace):  # `kubectl get hpotrials` shows each trial's latest epoch and value
        last = t["status"]["observations"][-1]
        assert t["status"]["lastEpoch"] == last["epoch"], t
        assert float(t["status"]["lastValue"]) == pytest.approx(last["value"], rel=1e-5), t


def test_a_failed_experiment_stops_its_other_running_pods(crds_installed, namespace, kube_api, operator, tmp_path):
    # Three trials at once; the second crashes two epochs in with no retry left, which fails the experiment.
    doc = manifest("failing", trials=3, parallelism=3, max_resource=60, seconds_per_epoch=0.5,
                   maxRetries=0, maxFailedTrials=0)
    with NodeDouble(crds_installed, kube_api, namespace, tmp_path / "node", crash_pods={"failing-0001-1"}) as node:
        status = run_to_the_end(crds_installed, kube_api, namespace, doc, node)
        core = client.CoreV1Api(kube_api)
        # The other trials' pods go; the failed trial's last pod stays for `kubectl logs` (docs/operator.md).
        wait_for(lambda: {p.metadata.name for p in core.list_namespaced_pod(namespace).items} == {"failing-0001-1"},
                 60, 0.5, "every pod but the failed run's deleted")
        # The node double sees a deletion on its next pass; leaving the block before that would stop
        # it with those runs still going, which it records as lost with the kubelet.
        wait_for(lambda: all(run.ended for run in node.history if run.pod != "failing-0001-1"), 30, 0.2,
                 "the node to end the deleted pods' runs")
    assert (status["phase"], status["reason"]) == ("Failed", "MaxFailedTrialsReached"), status
    by_name = {t["metadata"]["name"]: t["status"] for t in trials(kube_api, namespace)}
    assert by_name["failing-0001"]["phase"] == "Failed"
    for name in ("failing-0000", "failing-0002"):
        assert by_name[name]["phase"] == "Stopped", by_name[name]
        assert len(by_name[name]["observations"]) < 60
    ended = {run.pod: run.ended for run in node.history}
    # the running trainers were stopped by deleting their pods, not left to train to the end
    assert ended == {"failing-0000-1": "deleted", "failing-0001-1": "exit 3", "failing-0002-1": "deleted"}, ended


@pytest.mark.parametrize("keep", [False, True], ids=["dropped", "kept"])
def test_at_max_duration_the_stopped_best_trials_claim_stays(crds_installed, namespace, kube_api, operator,
                                                             tmp_path, keep):
    # Every trial is still running when time is up: all end Stopped, the best one among them.
    doc = manifest("timed", trials=3, parallelism=3, max_resource=60, seconds_per_epoch=0.3, maxDuration=8)
    doc["spec"]["checkpoints"] = {"keepCheckpoints": keep}
    with NodeDouble(crds_installed, kube_api, namespace, tmp_path / "node") as node:
        status = run_to_the_end(crds_installed, kube_api, namespace, doc, node)
    assert (status["phase"], status["reason"]) == ("Succeeded", "MaxDurationReached"), status
    stopped = {t["metadata"]["name"]: last_value(t) for t in trials(kube_api, namespace)
               if t["status"]["phase"] == "Stopped" and t["status"]["observations"]}
    assert len(stopped) == 3, stopped
    best = status["best"]["trial"]
    assert best == min(stopped, key=lambda name: (stopped[name], name)) and not status["best"]["complete"]
    assert status["best"]["checkpoint"] == f"{best}-ckpt:/"
    others = {f"{name}-ckpt" for name in stopped if name != best}
    expected = {f"{best}-ckpt": False, **{c: not keep for c in others}}
    wait_for(lambda: claims(kube_api, namespace) == expected or not keep and
             claims(kube_api, namespace) == {f"{best}-ckpt": False}, 30, 0.5, f"claims {expected}")


def test_one_shared_claim_holds_every_trials_checkpoints_in_its_own_sub_path(crds_installed, namespace, kube_api,
                                                                              operator, tmp_path):
    # ASHA's pause and resume: a resumed trial must find its own checkpoint in the shared claim.
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_persistent_volume_claim(namespace, {
        "metadata": {"name": "team-ckpt"},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}})
    doc = manifest("sharing", trials=12, parallelism=1, max_resource=9, algorithm="asha")
    doc["spec"]["scheduler"]["type"] = "promotion"
    doc["spec"]["checkpoints"] = {"storage": "shared", "claimName": "team-ckpt"}
    with NodeDouble(crds_installed, kube_api, namespace, tmp_path / "node") as node:
        status = run_to_the_end(crds_installed, kube_api, namespace, doc, node)
    assert status["phase"] == "Succeeded", status
    got = {t["spec"]["trialId"]: (t["spec"]["config"]["row"], t["status"]["phase"],
                                  max([o["epoch"] for o in t["status"]["observations"]], default=0))
           for t in trials(kube_api, namespace)}
    sim = simulate(LearningCurveTable.load(TABLE), SchedulerSpec(algorithm="asha", max_resource=9), workers=1,
                   seed=0, max_trials=12, stop_at_targets=False)
    assert got == sim.final  # every resumed trial continued from its own checkpoint
    assert any(run.attempt > 1 for run in node.history)  # and some were resumed
    for t in trials(kube_api, namespace):
        name, epochs = t["metadata"]["name"], [o["epoch"] for o in t["status"]["observations"]]
        assert epochs == list(range(1, len(epochs) + 1)), (name, epochs)
        assert t["status"]["checkpoint"] == f"team-ckpt:sharing/{name}"
        folder = tmp_path / "node" / "volumes" / "team-ckpt" / "sharing" / name
        assert sorted(p.name for p in folder.glob("epoch-*.ckpt"))[-1] == f"epoch-{epochs[-1]:06d}.ckpt", name
    assert status["best"]["checkpoint"] == f"team-ckpt:sharing/{status['best']['trial']}"
    assert claims(kube_api, namespace) == {"team-ckpt": False}  # no claim per trial, and the shared one stays
