"""The operator as a real process against the real API server, with the node played by a test double."""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from support.curve_manifests import node_manifest
from support.kube_tools import apply, experiment, finished, kubectl, trials, wait_for
from support.paths import TABLES
from hpo_operator.sim import LearningCurveTable, simulate
from hpo_operator.spec.experiment import SchedulerSpec
from support.node_double import NodeDouble

TABLE = TABLES / "digits_s44.json"
pytestmark = pytest.mark.timeout(420)


def manifest(name: str, *, trials: int, parallelism: int, max_resource: int = 9, seed: int = 0) -> dict:
    return node_manifest(name, trials=trials, parallelism=parallelism, gpu=True, maxRetries=2, maxFailedTrials=2,
                         searcher={"algorithm": "random", "seed": seed},
                         scheduler={"algorithm": "asha", "type": "promotion", "maxResource": max_resource})




def test_asha_experiment_succeeds_with_the_simulators_decisions(crds_installed, namespace, kube_api, operator,
                                                                tmp_path):
    doc = manifest("asha20", trials=20, parallelism=1)
    with NodeDouble(crds_installed, kube_api, namespace, tmp_path / "node") as node:
        apply(crds_installed, namespace, doc)
        wait_for(lambda: finished(kube_api, namespace, "asha20"), 360, 1, "the experiment to finish")
        assert not node.errors, node.errors
    status = experiment(kube_api, namespace, "asha20")["status"]
    assert status["phase"] == "Succeeded", status
    got = {t["spec"]["trialId"]: (t["spec"]["config"]["row"], t["status"]["phase"],
                                  max([o["epoch"] for o in t["status"]["observations"]], default=0))
           for t in trials(kube_api, namespace)}
    table = LearningCurveTable.load(TABLE)
    sim = simulate(table, SchedulerSpec(algorithm="asha", max_resource=9), workers=1, seed=0, max_trials=20, stop_at_targets=False)
    assert got == sim.final
    # every pod name was run once: no duplicate pods
    assert max(node.created.values()) == 1
    # the best trial and its checkpoint are in the status; kubectl shows them in columns
    best_id = min((tid for tid, (_, phase, _) in got.items() if phase == "Completed"),
                  key=lambda tid: table.curves[got[tid][0], 8])
    assert status["best"]["trial"] == f"asha20-{best_id:04d}" and status["best"]["complete"]
    assert status["best"]["checkpoint"].startswith(f"asha20-{best_id:04d}-ckpt")
    table_text = kubectl(crds_installed, "get", "hpx", "-n", namespace).stdout
    assert "Succeeded" in table_text and status["bestValue"] in table_text
    assert "Completed" in kubectl(crds_installed, "get", "hpt", "-n", namespace).stdout
    assert "Traceback" not in operator.logs()


def test_operator_killed_three_times_finishes_with_the_same_result(crds_installed, namespace, kube_api, operator,
                                                                   tmp_path):
    doc = manifest("killed", trials=12, parallelism=2, seed=3)
    with NodeDouble(crds_installed, kube_api, namespace, tmp_path / "node") as node:
        apply(crds_installed, namespace, doc)
        for kill in range(3):
            wait_for(lambda: sum(len(t.get("status", {}).get("observations") or []) for t in trials(kube_api, namespace))
                     >= 6 * (kill + 1), 120, 0.2, "progress before killing the operator")
            operator.kill()
            time.sleep(1.0)  # observations arrive while no operator runs
            operator.start()
        wait_for(lambda: finished(kube_api, namespace, "killed"), 300, 1, "the experiment to finish")
        assert not node.errors, node.errors
    status = experiment(kube_api, namespace, "killed")["status"]
    assert status["phase"] == "Succeeded", status
    assert operator.starts == 4
    assert max(node.created.values()) == 1, node.created  # no pod was created twice
    for t in trials(kube_api, namespace):
        epochs = [o["epoch"] for o in t["status"]["observations"]]
        assert epochs == list(range(1, len(epochs) + 1)), (t["metadata"]["name"], epochs)  # none lost or repeated
        assert t["status"]["processed"] == len(epochs)
    assert status["trials"]["created"] == 12


def test_crashed_runs_are_retried_and_counted(crds_installed, namespace, kube_api, operator, tmp_path):
    doc = manifest("crashy", trials=4, parallelism=2, max_resource=5)
    doc["spec"]["scheduler"]["algorithm"] = "fifo"
    with NodeDouble(crds_installed, kube_api, namespace, tmp_path / "node",
                    crash_pods={"crashy-0000-1", "crashy-0002-1"}) as node:
        apply(crds_installed, namespace, doc)
        wait_for(lambda: finished(kube_api, namespace, "crashy"), 240, 1, "the experiment to finish")
        assert not node.errors, node.errors
    by_name = {t["metadata"]["name"]: t["status"] for t in trials(kube_api, namespace)}
    for name in ("crashy-0000", "crashy-0002"):
        assert (by_name[name]["phase"], by_name[name]["failures"], by_name[name]["attempts"]) == ("Completed", 1, 2)
        epochs = [o["epoch"] for o in by_name[name]["observations"]]
        assert epochs == [1, 2, 3, 4, 5]  # the retry resumed from the checkpoint, nothing repeated
        attempts = [o["attempt"] for o in by_name[name]["observations"]]
        assert attempts[0] == 1 and attempts[-1] == 2 and attempts == sorted(attempts)
    events = kubectl(crds_installed, "get", "events", "-n", namespace, "-o", "yaml").stdout
    assert "EpochsRepeated" not in events and "Retrying" in events
    assert experiment(kube_api, namespace, "crashy")["status"]["trials"]["failed"] == 0


def test_a_trainer_writing_garbage_gets_one_warning_event_per_problem_and_run(crds_installed, namespace, kube_api,
                                                                              operator, tmp_path):
    doc = manifest("noisy", trials=2, parallelism=2, max_resource=3)
    doc["spec"]["scheduler"]["algorithm"] = "fifo"
    doc["spec"]["searchSpace"]["garbage"] = {"type": "choice", "values": [True]}
    with NodeDouble(crds_installed, kube_api, namespace, tmp_path / "node") as node:
        apply(crds_installed, namespace, doc)
        wait_for(lambda: finished(kube_api, namespace, "noisy"), 240, 1, "the experiment to finish")
        assert not node.errors, node.errors
    assert experiment(kube_api, namespace, "noisy")["status"]["phase"] == "Succeeded"
    warnings = [e for e in client.CoreV1Api(kube_api).list_namespaced_event(namespace).items if e.type == "Warning"]
    for t in trials(kube_api, namespace):
        name = t["metadata"]["name"]
        assert [o["epoch"] for o in t["status"]["observations"]] == [1, 2, 3]  # every valid line kept
        # 6 bad lines (2 an epoch): one event per kind of problem, posted once (not once per line or step)
        mine = sorted((e.reason, e.message.split(":")[1].strip(), e.count or 1) for e in warnings
                      if e.involved_object.name == name)
        assert mine == [("BadMetricsLine", "missing_objective", 1), ("BadMetricsLine", "not_json", 1)], mine


def test_invalid_spec_fails_with_a_condition_naming_the_field(crds_installed, namespace, kube_api, operator):
    doc = manifest("badrange", trials=2, parallelism=1)
    doc["spec"]["searchSpace"]["lr"] = {"type": "uniform", "min": 1.0, "max": 0.1}  # the schema cannot say min < max
    apply(crds_installed, namespace, doc)
    wait_for(lambda: finished(kube_api, namespace, "badrange"), 60, 0.5, "the experiment to be refused")
    status = experiment(kube_api, namespace, "badrange")["status"]
    assert status["phase"] == "Failed" and status["reason"] == "InvalidSpec"
    assert "spec.searchSpace.lr.max" in status["message"]
    cond = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert cond["status"] == "False" and "spec.searchSpace.lr.max" in cond["message"]
    events = kubectl(crds_installed, "get", "events", "-n", namespace, "-o", "yaml").stdout
    assert "spec.searchSpace.lr.max" in events
    assert trials(kube_api, namespace) == []  # nothing half-created


def test_deleting_the_experiment_removes_trials_and_pods(crds_installed, namespace, kube_api, operator, tmp_path):
    doc = manifest("doomed", trials=6, parallelism=2, max_resource=27)
    with NodeDouble(crds_installed, kube_api, namespace, tmp_path / "node"):
        apply(crds_installed, namespace, doc)
        wait_for(lambda: len(trials(kube_api, namespace)) >= 2, 60, 0.2, "trials to start")
        assert not experiment(kube_api, namespace, "doomed")["metadata"].get("finalizers")  # nothing to wait for
        core, rbac = client.CoreV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
        sidecar_identity = [core.read_namespaced_service_account("hpo-trial-sidecar", namespace),
                            rbac.read_namespaced_role("hpo-trial-sidecar", namespace),
                            rbac.read_namespaced_role_binding("hpo-trial-sidecar", namespace)]
        owners = [[o.name for o in obj.metadata.owner_references or []] for obj in sidecar_identity]
        assert owners == [["doomed"]] * 3, owners  # so the garbage collector takes them with it
        kubectl(crds_installed, "delete", "hpx", "doomed", "-n", namespace, "--wait=false")

        def sidecar_identity_left():
            return ([a for a in core.list_namespaced_service_account(namespace).items
                     if a.metadata.name == "hpo-trial-sidecar"]
                    + rbac.list_namespaced_role(namespace).items + rbac.list_namespaced_role_binding(namespace).items)

        wait_for(lambda: not trials(kube_api, namespace) and not core.list_namespaced_pod(namespace).items
                 and not sidecar_identity_left(), 120, 0.5,
                 "garbage collection of trials, pods and the sidecar's identity")
