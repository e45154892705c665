"""The views of a cluster experiment: the operator runs a short ASHA experiment (the node played by the test
double, the real sidecar writing observations), then `hpo status hpx/NAME` (and `--watch` while it runs),
`kubectl hpo status NAME` through the real kubectl, `hpo plot` and `hpo report` read it back through a
kubeconfig, the last with a user who may only get and list what `kubectl get` shows."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import yaml
from kubernetes import client

from support.kube_tools import experiment, kubectl, trials, wait_for
from support.node_double import NodeDouble
from support.paths import REPO, TABLES

pytestmark = pytest.mark.timeout(420)
KUBECTL = "/usr/bin/kubectl"
VENV_BIN = str(Path(sys.executable).parent)


def manifest(name: str) -> dict:
    return {
        "apiVersion": "hpo.dev/v1alpha1", "kind": "HPOExperiment", "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "val_error", "mode": "min"},
            "searchSpace": {"row": {"type": "randint", "min": 0, "max": 399},
                            "table": {"type": "choice", "values": [str(TABLES / "digits_s44.json")]},
                            "seconds_per_epoch": {"type": "choice", "values": [0.05]}},
            "searcher": {"seed": 2},
            "scheduler": {"algorithm": "asha", "type": "promotion", "maxResource": 9},
            "budget": {"maxTrials": 8, "parallelism": 2, "maxRetries": 1, "maxFailedTrials": 2},
            "trialTemplate": {"spec": {"containers": [{
                "name": "trainer", "image": "hpo-trainer:test", "command": ["python", "/opt/hpo/curve_trainer.py"],
                "resources": {"limits": {"nvidia.com/gpu": 1}}}]}},
        },
    }


def hpo(kubeconfig, *args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpo_operator.cli.main", *map(str, args)], cwd=REPO, text=True,
                          capture_output=True, env={**os.environ, "KUBECONFIG": str(kubeconfig)}, timeout=120, **kw)


@pytest.fixture
def finished_experiment(crds_installed, namespace, kube_api, operator, tmp_path):
    """A real experiment run by the operator, `hpo status --watch` following it from the start."""
    name = "viewed"
    kubeconfig = crds_installed.kubeconfig_path
    with NodeDouble(crds_installed, kube_api, namespace, tmp_path / "node") as node:
        kubectl(crds_installed, "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest(name)))
        watch = subprocess.Popen([sys.executable, "-m", "hpo_operator.cli.main", "status", f"hpx/{name}", "-n",
                                  namespace, "--watch", "--interval", "0.3"], cwd=REPO, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env={**os.environ, "KUBECONFIG": str(kubeconfig)})
        wait_for(lambda: (experiment(kube_api, namespace, name).get("status") or {}).get("phase")
                 in ("Succeeded", "Failed"), 300, 0.5, "the experiment to finish")
        assert not node.errors, node.errors
        watched, err = watch.communicate(timeout=30)  # --watch ends by itself once the experiment has
    assert watch.returncode == 0, err
    # A Warning Event on a trial, as the operator posts them (kopf.event: involvedObject = the trial).
    first = trials(kube_api, namespace)[0]
    client.CoreV1Api(kube_api).create_namespaced_event(namespace, {
        "metadata": {"generateName": f"{first['metadata']['name']}."},
        "involvedObject": {"apiVersion": "hpo.dev/v1alpha1", "kind": "HPOTrial", "name": first["metadata"]["name"],
                           "namespace": namespace, "uid": first["metadata"]["uid"]},
        "type": "Warning", "reason": "MetricsProblem", "message": "line 3 is not JSON; write lines with report()",
        "count": 1, "firstTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "lastTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "source": {"component": "kopf"}})
    return name, namespace, kubeconfig, watched


def test_status_of_a_cluster_experiment_its_watch_and_the_kubectl_plugin(finished_experiment, kube_api):
    name, ns, kubeconfig, watched = finished_experiment
    status = experiment(kube_api, ns, name)["status"]
    objects = trials(kube_api, ns)
    # the sidecar records the trainer's time with every epoch: what the plots against wall time read
    assert all(isinstance(o.get("time"), float) for t in objects for o in t["status"]["observations"])

    out = hpo(kubeconfig, "status", f"hpx/{name}", "-n", ns)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    best = status["best"]
    assert text.startswith(f"experiment {name} (cluster {ns}/{name}): Succeeded")
    assert f"best: {best['trial']} val_error={best['value']:.4g} at epoch 9" in text
    reached = sum(max((o["epoch"] for o in t["status"].get("observations") or []), default=0) >= 3 for t in objects)
    assert f"epoch 3: {reached} reached" in text
    rows = [line.split() for line in text.splitlines() if line.startswith(f"{name}-")]
    assert rows[0][0] == best["trial"] and len(rows) == len(objects)
    assert "recent warnings:" in text and f"HPOTrial/{objects[0]['metadata']['name']} MetricsProblem" in text

    # --watch drew the experiment as it went (more than one view) and stopped at its end
    views = watched.split("\n--- ")
    assert len(views) >= 2, watched
    assert ": Running" in views[0] or ": Pending" in views[0]
    assert f"{name} (cluster {ns}/{name}): Succeeded" in views[-1]

    # as a kubectl plugin: the same view
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    plugins = subprocess.run([KUBECTL, "plugin", "list"], capture_output=True, text=True, env=env)
    assert f"{VENV_BIN}/kubectl-hpo" in plugins.stdout, plugins.stdout + plugins.stderr
    out = subprocess.run([KUBECTL, "hpo", "status", name, "-n", ns], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == hpo(kubeconfig, "status", f"hpx/{name}", "-n", ns).stdout
    missing = subprocess.run([KUBECTL, "hpo", "status", "nope", "-n", ns], capture_output=True, text=True, env=env)
    assert missing.returncode == 2
    assert f"hpx/nope in namespace {ns}: not found; list the experiments with `kubectl get hpx -n {ns}`" \
        in missing.stderr


def viewer_kubeconfig(cp, kube_api, ns: str) -> Path:
    """A ServiceAccount that may get and list experiments and trials, and list events: nothing more."""
    rbac = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "viewer"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "hpo-viewer"},
         "rules": [{"apiGroups": ["hpo.dev"], "resources": ["hpoexperiments", "hpotrials"], "verbs": ["get", "list"]},
                   {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "hpo-viewer"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "hpo-viewer"},
         "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": ns}]},
    ]
    kubectl(cp, "apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(rbac))
    core = client.CoreV1Api(kube_api)
    account = wait_for(lambda: core.read_namespaced_service_account("viewer", ns).secrets, 30, 0.2,
                       "the viewer's token")
    token = base64.b64decode(core.read_namespaced_secret(account[0].name, ns).data["token"]).decode()
    return cp.kubeconfig_for_token(token, f"viewer-{ns}")


def test_plot_and_report_need_only_what_kubectl_get_reads(finished_experiment, crds_installed, kube_api, tmp_path):
    name, ns, _, _ = finished_experiment
    viewer = viewer_kubeconfig(crds_installed, kube_api, ns)
    assert "no" == kubectl(crds_installed, "auth", "can-i", "get", "pods", "-n", ns,
                           f"--as=system:serviceaccount:{ns}:viewer", check=False).stdout.strip()
    out = hpo(viewer, "plot", f"hpx/{name}", "-n", ns, "-o", tmp_path, "--format", "png", "svg")
    assert out.returncode == 0, out.stderr
    curves = matplotlib.image.imread(tmp_path / f"{name}-curves.png")
    black = (np.abs(curves[..., :3]).max(axis=-1) < 0.08).sum()
    assert black > 300  # the best trial's line
    best = experiment(kube_api, ns, name)["status"]["best"]["trial"]
    assert f"best: {best}" in (tmp_path / f"{name}-curves.svg").read_text()
    progress = (tmp_path / f"{name}-progress.svg").read_text()
    assert "wall time" in progress and "no epoch times recorded" not in progress

    report = tmp_path / "report.html"
    out = hpo(viewer, "report", f"hpx/{name}", "-n", ns, "-o", report)
    assert out.returncode == 0, out.stderr
    page = report.read_text()
    assert all(t["metadata"]["name"] in page for t in trials(kube_api, ns))
    assert "MetricsProblem" in page and f"cluster {ns}/{name}" in page

    # without the right to read trials, the error says which rights are missing
    kubectl(crds_installed, "patch", "role", "hpo-viewer", "-n", ns, "--type=json",
            "-p", '[{"op": "replace", "path": "/rules/0/resources", "value": ["hpoexperiments"]}]')
    refused = wait_for(lambda: (lambda r: r if r.returncode == 2 else None)(hpo(viewer, "status", f"hpx/{name}",
                                                                                 "-n", ns)),
                       30, 0.5, "the narrowed role to apply")
    assert "needs get and list on hpoexperiments and hpotrials" in refused.stderr
