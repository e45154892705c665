"""The real sidecar as a pod runs it: in-cluster credentials and the trainer's exit seen in a shared process table.

The node double (``pod_like=True``) writes the pod's projected volume as a
kubelet does (a token bound to the pod from the TokenRequest API, ``ca.crt``
from the namespace's ``kube-root-ca.crt`` ConfigMap, the namespace), gives the
sidecar ``KUBERNETES_SERVICE_HOST/PORT`` and no kubeconfig, and runs trainer and
sidecar in one private PID namespace, telling the sidecar nothing when the
trainer exits.
"""

from __future__ import annotations

import subprocess

import pytest
import yaml
from kubernetes import client

from support.kube_tools import experiment, kubectl, trials, wait_for
from support.node_double import NodeDouble
from support.paths import TABLES

pytestmark = pytest.mark.timeout(240)


def experiment_doc(name: str, trials: int) -> dict:
    return {
        "apiVersion": "hpo.dev/v1alpha1", "kind": "HPOExperiment", "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "val_error", "mode": "min"},
            "searchSpace": {"row": {"type": "randint", "min": 0, "max": 399},
                            "table": {"type": "choice", "values": [str(TABLES / "digits_s44.json")]}},
            "scheduler": {"algorithm": "asha", "type": "promotion", "maxResource": 3},
            "budget": {"maxTrials": trials, "parallelism": 2},
            "trialTemplate": {"spec": {"containers": [{"name": "trainer", "image": "hpo-trainer:test"}]}},
        },
    }


def wait_for_root_ca(core, namespace: str) -> None:
    # The controller manager publishes the CA into each new namespace; a pod's optional ConfigMap source
    # started before that would carry no CA, as on a cluster.
    wait_for(lambda: [c for c in core.list_namespaced_config_map(namespace).items
                      if c.metadata.name == "kube-root-ca.crt"], 30, 0.2, "the namespace's kube-root-ca.crt")


def test_sidecars_report_with_their_pods_token_and_see_the_trainer_exit(crds_installed, namespace, kube_api,
                                                                        operator, tmp_path):
    doc = experiment_doc("podlike", trials=4)
    wait_for_root_ca(client.CoreV1Api(kube_api), namespace)
    with NodeDouble(crds_installed, kube_api, namespace, tmp_path / "node", pod_like=True) as node:
        kubectl(crds_installed, "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
        wait_for(lambda: (experiment(kube_api, namespace, "podlike").get("status") or {}).get("phase")
                 in ("Succeeded", "Failed"), 180, 0.5, "the experiment to end")
        wait_for(lambda: not node.runs, 60, 0.2, "every pod to end")
        assert not node.errors, node.errors
    assert experiment(kube_api, namespace, "podlike")["status"]["phase"] == "Succeeded"
    for t in trials(kube_api, namespace):
        epochs = [o["epoch"] for o in t["status"]["observations"]]
        assert epochs and epochs == list(range(1, len(epochs) + 1)), (t["metadata"]["name"], epochs)
    pods = tmp_path / "node" / "pods"
    assert len(node.history) >= 4
    for run in node.history:
        poddir = pods / run.pod
        # what the kubelet wrote for the sidecar: the bound token, the cluster's CA, the namespace
        assert node.projected[run.pod] == ["ca.crt", "namespace", "token"], node.projected[run.pod]
        sidecar_log = (poddir / "sidecar.log").read_text()
        # the sidecar ended by itself, having seen the trainer gone from the shared process table
        assert not (poddir / "metrics.jsonl.exit").exists()
        assert (poddir / "sidecar.exit-code").read_text() == "0", sidecar_log[-2000:]
        assert (poddir / "trainer.exit-code").read_text() == "0"
        assert "Finished trial=" in sidecar_log


def test_a_sidecar_refuses_an_api_server_its_ca_does_not_vouch_for(crds_installed, namespace, kube_api, operator,
                                                                   tmp_path):
    """The CA is used, not skipped: with another CA in ``ca.crt`` the sidecar records nothing and says why."""
    other = tmp_path / "other-ca"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other",
                    "-keyout", str(other.with_suffix(".key")), "-out", str(other.with_suffix(".crt"))],
                   check=True, capture_output=True)
    wait_for_root_ca(client.CoreV1Api(kube_api), namespace)
    with NodeDouble(crds_installed, kube_api, namespace, tmp_path / "node", pod_like=True,
                    ca_override=other.with_suffix(".crt").read_text()) as node:
        kubectl(crds_installed, "apply", "-n", namespace, "-f", "-",
                input=yaml.safe_dump(experiment_doc("untrusted", trials=1)))
        poddir = tmp_path / "node" / "pods" / "untrusted-0000-1"
        wait_for(lambda: (poddir / "sidecar.exit-code").exists(), 120, 0.5, "the first sidecar to give up")
        assert not node.errors, node.errors
    sidecar_log = (poddir / "sidecar.log").read_text()
    assert (poddir / "sidecar.exit-code").read_text() != "0"
    assert "CERTIFICATE_VERIFY_FAILED" in sidecar_log, sidecar_log[-2000:]
    assert (poddir / "metrics.jsonl").read_text().strip()  # the trainer reported epochs...
    assert trials(kube_api, namespace)[0]["status"]["observations"] == []  # ...and none reached the API server
