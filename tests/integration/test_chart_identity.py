"""The operator with the chart's identity only: a verb missing from the chart fails here, not on a cluster.

The chart is rendered with Helm; its ServiceAccount, (Cluster)Role and binding
are applied to the real API server; the operator runs as the chart's
Deployment runs it (the same kopf arguments and environment) with a token of
that ServiceAccount (from the TokenRequest API, as a kubelet mounts it) and no
other credentials. It then runs an ASHA experiment to the end: trials, pods,
claims, pauses, resumes, deletions, Events and the sidecar's RBAC, all under
the chart's rules, while the node double plays the pods.
"""

from __future__ import annotations

import uuid

import helm_python as helm  # a test dependency: without it this test fails, never skips
import pytest
import yaml
from kubernetes import client

from support.control_plane import free_port
from support.kube_tools import experiment, kubectl, trials, wait_for
from support.node_double import NodeDouble
from support.operator_process import Operator
from support.paths import REPO, TABLES

CHART = REPO / "helm" / "hpo-operator"
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
pytestmark = pytest.mark.timeout(300)


def render_chart(values: dict, release: str, namespace: str) -> list[dict]:
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name=release, namespace=namespace, is_install=True)
    return [d for path, text in rendered.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]


def account_token(api, namespace: str, account: str) -> str:
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[],
                                                                                 expiration_seconds=3600))
    return client.CoreV1Api(api).create_namespaced_service_account_token(account, namespace, request).status.token


def forbidden_lines(logs: str) -> list[str]:
    # A cluster-wide operator may meet other tests' namespaces being deleted; those refusals are not RBAC's.
    return [line for line in logs.splitlines()
            if ("forbidden" in line.lower() or " 403" in line) and "being terminated" not in line]


@pytest.mark.parametrize("install", ["one-namespace", "cluster"])
def test_the_operator_runs_an_experiment_with_the_charts_rbac_only(crds_installed, namespace, kube_api, tmp_path,
                                                                   install):
    cp = crds_installed
    release = f"chart-{uuid.uuid4().hex[:6]}"
    docs = render_chart({"watchNamespace": namespace} if install == "one-namespace" else {}, release, namespace)
    rbac = [d for d in docs if d["kind"] in RBAC_KINDS]
    assert {d["kind"] for d in rbac} >= {"ServiceAccount", "RoleBinding" if install == "one-namespace"
                                         else "ClusterRoleBinding"}
    kubectl(cp, "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(rbac))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    token = account_token(kube_api, namespace, pod["serviceAccountName"])
    args = [f"--liveness=http://127.0.0.1:{free_port()}/healthz" if a.startswith("--liveness=") else a
            for a in container["args"]]
    env = {e["name"]: e["value"] for e in container.get("env") or []}
    operator = Operator(cp, namespace, tmp_path, kubeconfig=cp.kubeconfig_for_token(token, f"operator-{release}"),
                        kopf_args=args, env=env)
    doc = {
        "apiVersion": "hpo.dev/v1alpha1", "kind": "HPOExperiment", "metadata": {"name": "charted"},
        "spec": {
            "objective": {"metric": "val_error", "mode": "min"},
            "searchSpace": {"row": {"type": "randint", "min": 0, "max": 399},
                            "table": {"type": "choice", "values": [str(TABLES / "digits_s44.json")]}},
            "scheduler": {"algorithm": "asha", "type": "promotion", "maxResource": 9},
            "budget": {"maxTrials": 9, "parallelism": 2},
            "trialTemplate": {"spec": {"containers": [{"name": "trainer", "image": "hpo-trainer:test"}]}},
        },
    }
    operator.start()
    try:
        with NodeDouble(cp, kube_api, namespace, tmp_path / "node") as node:
            kubectl(cp, "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
            wait_for(lambda: (experiment(kube_api, namespace, "charted").get("status") or {}).get("phase")
                     in ("Succeeded", "Failed"), 240, 0.5, "the experiment to end")
            assert not node.errors, node.errors
            core = client.CoreV1Api(kube_api)
            wait_for(lambda: not core.list_namespaced_pod(namespace).items, 60, 0.5, "every pod deleted")
    finally:
        operator.stop()
        for d in rbac:
            if d["kind"].startswith("Cluster"):
                kubectl(cp, "delete", d["kind"].lower(), d["metadata"]["name"], check=False)
    status = experiment(kube_api, namespace, "charted")["status"]
    logs = operator.logs()
    assert status["phase"] == "Succeeded", (status, forbidden_lines(logs)[:5])
    assert not forbidden_lines(logs), forbidden_lines(logs)[:5]
    assert any(run.attempt > 1 for run in node.history)  # paused trials were resumed
    stopped = [t["metadata"]["name"] for t in trials(kube_api, namespace) if t["status"]["phase"] == "Stopped"]
    assert stopped  # so their claims' deletion was asked for
    pvcs = client.CoreV1Api(kube_api).list_namespaced_persistent_volume_claim(namespace).items
    deleting = {c.metadata.name for c in pvcs if c.metadata.deletion_timestamp is not None}
    present = {c.metadata.name for c in pvcs} - deleting
    assert not {f"{t}-ckpt" for t in stopped if t != status["best"]["trial"]} & present  # dropped claims went
    events = client.CoreV1Api(kube_api).list_namespaced_event(namespace).items
    assert {"Started", "Resumed"} <= {e.reason for e in events}  # the operator's Events got through
