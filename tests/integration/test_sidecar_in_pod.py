"""The real sidecar as a pod runs it: in-cluster credentials and the trainer's exit seen in a shared process table.

The node double (``pod_like=True``) writes the pod's projected volume as a
kubelet does (a token bound to the pod from the TokenRequest API, ``ca.crt``
from the namespace's ``kube-root-ca.crt`` ConfigMap, the namespace), gives the
sidecar ``KUBERNETES_SERVICE_HOST/PORT`` and no kubeconfig, and runs trainer and
sidecar in one private PID namespace, telling the sidecar nothing when the
trainer exits.
"""

from __future__ import annotations

import pytest
import yaml
from kubernetes import client

from support.kube_tools import experiment, kubectl, trials, wait_for
from support.node_double import NodeDouble
from support.paths import TABLES

pytestmark = pytest.mark.timeout(240)


def test_sidecars_report_with_their_pods_token_and_see_the_trainer_exit(crds_installed, namespace, kube_api,
                                                                        operator, tmp_path):
    doc = {
        "apiVersion": "hpo.dev/v1alpha1", "kind": "HPOExperiment", "metadata": {"name": "podlike"},
        "spec": {
            "objective": {"metric": "val_error", "mode": "min"},
            "searchSpace": {"row": {"type": "randint", "min": 0, "max": 399},
                            "table": {"type": "choice", "values": [str(TABLES / "digits_s44.json")]}},
            "scheduler": {"algorithm": "asha", "type": "promotion", "maxResource": 3},
            "budget": {"maxTrials": 4, "parallelism": 2},
            "trialTemplate": {"spec": {"containers": [{"name": "trainer", "image": "hpo-trainer:test"}]}},
        },
    }
    core = client.CoreV1Api(kube_api)
    # The controller manager publishes the CA into each new namespace; a pod's optional ConfigMap source
    # started before that would carry no CA, as on a cluster.
    wait_for(lambda: [c for c in core.list_namespaced_config_map(namespace).items
                      if c.metadata.name == "kube-root-ca.crt"], 30, 0.2, "the namespace's kube-root-ca.crt")
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
        assert "Unverified HTTPS request" not in sidecar_log  # the CA was used: TLS verified
        # the sidecar ended by itself, having seen the trainer gone from the shared process table
        assert not (poddir / "metrics.jsonl.exit").exists()
        assert (poddir / "sidecar.exit-code").read_text() == "0", sidecar_log[-2000:]
        assert (poddir / "trainer.exit-code").read_text() == "0"
        assert "Finished trial=" in sidecar_log
