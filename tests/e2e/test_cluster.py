"""The user's path on a real cluster: helm install, kubectl apply an example, watch it finish, helm uninstall.

Trial pods run the real trainer image (the digits MLP on the node's CPU: no
GPU here, but each pod requests `nvidia.com/gpu: 1`, which the node
advertises as an extended resource, so scheduling and accounting are real).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import yaml

from support.kube_tools import wait_for
from support.paths import REPO

helm = pytest.importorskip("helm_python")
pytestmark = pytest.mark.timeout(3600)

CHART = REPO / "helm" / "hpo-operator"
RELEASE, OPERATOR_NS = "hpo", "hpo-system"


@pytest.fixture(scope="module")
def release(cluster, images):
    config = helm.Config(kubeconfig_path=str(cluster.kubeconfig_path), namespace=OPERATOR_NS)
    repository, tag = images["operator"].split(":")
    config.install(str(CHART), RELEASE, {"image": {"repository": repository, "tag": tag, "pullPolicy": "Never"}},
                   namespace=OPERATOR_NS, create_namespace=True, wait="watcher", timeout=300)
    yield config
    config.uninstall(RELEASE, ignore_not_found=True, wait="watcher", timeout=120)


@pytest.fixture
def namespace(cluster):
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def get(cluster, kind: str, ns: str, name: str = "", selector: str = ""):
    args = ["get", kind, "-n", ns, "-o", "json"] + ([name] if name else []) + (["-l", selector] if selector else [])
    return json.loads(cluster.kubectl(*args).stdout)


def digits_example(trainer_image: str) -> dict:
    """examples/digits-asha.yaml with the locally built trainer image and a budget for a 2-core node."""
    doc = yaml.safe_load((REPO / "examples" / "digits-asha.yaml").read_text())
    trainer = doc["spec"]["trialTemplate"]["spec"]["containers"][0]
    trainer["image"] = trainer_image
    trainer["resources"]["requests"] = {"cpu": "100m", "memory": "256Mi"}
    doc["spec"]["scheduler"]["maxResource"] = 9
    doc["spec"]["budget"].update(maxTrials=8, parallelism=2, maxDuration="20m")
    return doc


def test_example_experiment_pauses_resumes_and_succeeds(cluster, images, release, namespace):
    doc = digits_example(images["trainer"])
    name = doc["metadata"]["name"]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
    assert_trainer_cannot_read_a_token(cluster, namespace, name)
    victim, attempt, until = delete_the_operator_and_a_training_pod(cluster, namespace)

    def finished():
        phase = (get(cluster, "hpx", namespace, name).get("status") or {}).get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    started = time.monotonic()
    phase = wait_for(finished, timeout=1200, interval=5, what=f"experiment {name} to finish")
    elapsed = time.monotonic() - started
    status = get(cluster, "hpx", namespace, name)["status"]
    assert phase == "Succeeded", (status, cluster.kubectl("get", "events", "-n", namespace).stdout)
    assert elapsed < 20 * 60  # within its maxDuration budget

    trials = get(cluster, "hpt", namespace)["items"]
    events = get(cluster, "events", namespace)["items"]
    reasons = {(e["involvedObject"]["name"], e["reason"]) for e in events}
    assert not any(r in ("EpochsRepeated", "BadMetricsLine") for _, r in reasons), reasons
    # The run whose pod was deleted is one failure if the deletion ended it before its last epoch was
    # recorded (the rule of the integration tier's fault audit; a status read a moment stale can name a
    # run that had just finished), retried from its checkpoint (every trial's epochs are checked below:
    # none lost, none twice); no other run failed.
    failures = {t["metadata"]["name"]: t["status"].get("failures", 0) for t in trials}
    recorded = [o["epoch"] for t in trials if t["metadata"]["name"] == victim
                for o in t["status"]["observations"] if o.get("attempt") == attempt]
    ended_early = int(max(recorded, default=0) < until)
    assert failures[victim] == ended_early and sum(failures.values()) == ended_early, (failures, recorded, until)
    assert ((victim, "Retrying") in reasons) == bool(ended_early)

    # A trial paused at a rung, its pod ended, and a new pod resumed it from its PVC checkpoint:
    # its observations continue after the checkpointed epoch (and no epoch was trained twice).
    resumed = []
    for t in trials:
        obs = t["status"]["observations"]
        assert [o["epoch"] for o in obs] == list(range(1, len(obs) + 1)), t["metadata"]["name"]
        firsts = {}
        for o in obs:
            firsts.setdefault(o["attempt"], o["epoch"])
        if len(firsts) > 1:
            resumed.append((t["metadata"]["name"], firsts))
    assert resumed, "no trial was paused and resumed"
    trial, firsts = resumed[0]
    assert min(e for a, e in firsts.items() if a > 1) > 1  # not from epoch 1
    assert (trial, "Paused") in reasons and (trial, "Resumed") in reasons

    # Nothing left running: stopped and finished pods are gone.
    wait_for(lambda: not get(cluster, "pods", namespace, selector=f"hpo.dev/experiment={name}")["items"],
             timeout=60, interval=2, what="trial pods to be cleaned up")

    # The best trial, its metric and checkpoint are in the status, and kubectl shows them in columns.
    best = status["best"]
    assert best["complete"] and best["epoch"] == 9 and 0 <= best["value"] < 1
    claim, _, sub = best["checkpoint"].partition(":")
    claims = {c["metadata"]["name"] for c in get(cluster, "pvc", namespace)["items"]}
    assert claim in claims
    stopped = [t["metadata"]["name"] for t in trials if t["status"]["phase"] == "Stopped"]
    assert all(f"{t}-ckpt" not in claims for t in stopped if t != best["trial"])
    hpx = cluster.kubectl("get", "hpx", "-n", namespace).stdout
    assert "Succeeded" in hpx and status["bestValue"] in hpx and best["trial"] in hpx
    hpt = cluster.kubectl("get", "hpt", "-n", namespace).stdout
    assert "Completed" in hpt and ("Stopped" in hpt or "Paused" in hpt or not stopped)
    assert "Succeeded" in cluster.kubectl("get", "hpo", "-n", namespace).stdout  # the category lists both kinds

    # The checkpoint really is on the volume: a pod mounting the best trial's claim reads it.
    assert_checkpoint_on_claim(cluster, namespace, claim, images["trainer"])


# Run inside a container with the sidecar's token on stdin: who am I, and where could I read that token?
TOKEN_PROBE = r"""
import json, os, sys
token = sys.stdin.read().strip()
hits = []
for root, dirs, files in os.walk("/"):
    if root == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
    for f in files:
        path = os.path.join(root, f)
        try:
            if os.path.isfile(path) and not os.path.islink(path) and os.path.getsize(path) <= 65536:
                with open(path, "rb") as fh:
                    if token.encode() in fh.read():
                        hits.append(path)
        except OSError:
            pass
for pid in filter(str.isdigit, os.listdir("/proc")):  # other containers' files and environment, seen
    for path in (f"/proc/{pid}/root{sys.argv[1]}/token", f"/proc/{pid}/environ"):  # through the shared pid namespace
        try:
            with open(path, "rb") as fh:
                if token.encode() in fh.read():
                    hits.append(path)
        except OSError:
            pass
def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""
sidecars = [p for p in filter(str.isdigit, os.listdir("/proc")) if b"hpo_operator.sidecar" in cmdline(p)]
print(json.dumps({"uid": os.getuid(), "euid": os.geteuid(), "hits": hits, "sidecar_pids": sidecars,
                  "kubernetes_secrets": os.path.exists("/var/run/secrets/kubernetes.io"),
                  "api_env": sorted(k for k in os.environ if k.startswith("KUBERNETES_") and "TOKEN" in k)}))
"""


def assert_trainer_cannot_read_a_token(cluster, namespace: str, experiment: str) -> None:
    """While a trial pod runs: its trainer runs as non-root and can read no API token, anywhere.

    The same probe in the sidecar finds the token (it must hold it), so the probe can find one.
    """
    from hpo_operator.controller.builders import SIDECAR_NAME, TOKEN_DIR

    def probe(pod: str, container: str, token: str):
        out = cluster.kubectl("exec", "-i", "-n", namespace, pod, "-c", container, "--",
                              "python", "-c", TOKEN_PROBE, TOKEN_DIR, input=token, check=False)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def running_pods():
        pods = get(cluster, "pods", namespace, selector=f"hpo.dev/experiment={experiment}")["items"]
        return [p["metadata"]["name"] for p in pods
                if sum("running" in (c.get("state") or {}) for c in p["status"].get("containerStatuses") or []) == 2]

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # a run can end under the probe: then try the next running pod
        for pod in running_pods():
            token = cluster.kubectl("exec", "-n", namespace, pod, "-c", SIDECAR_NAME, "--", "python", "-c",
                                    f"print(open('{TOKEN_DIR}/token').read())", check=False).stdout.strip()
            if token.count(".") != 2:
                continue
            trainer, sidecar = probe(pod, "trainer", token), probe(pod, SIDECAR_NAME, token)
            if trainer is None or sidecar is None:
                continue
            assert trainer["sidecar_pids"], trainer  # it sees the sidecar's process, so /proc/<pid>/root was tried
            assert trainer["hits"] == [], trainer
            # The probe does find a readable token: the sidecar's (/var/run may be a link to /run).
            assert any("/secrets/hpo.dev/serviceaccount/" in h for h in sidecar["hits"]), sidecar
            assert not trainer["kubernetes_secrets"] and trainer["api_env"] == [], trainer
            assert trainer["uid"] != 0 and trainer["euid"] != 0, trainer
            return
        time.sleep(1)
    raise AssertionError("no trial pod stayed running long enough to probe its trainer")


def assert_checkpoint_on_claim(cluster, namespace: str, claim: str, image: str) -> None:
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "read-ckpt"},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
            "containers": [{"name": "ls", "image": image, "command": [
                "python", "-c", "import os; print(sorted(os.listdir('/ckpt')))"],
                "volumeMounts": [{"name": "c", "mountPath": "/ckpt"}]}],
            "volumes": [{"name": "c", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod))
    wait_for(lambda: get(cluster, "pod", namespace, "read-ckpt")["status"].get("phase") in ("Succeeded", "Failed"),
             timeout=180, interval=2, what="the checkpoint reader pod")
    listing = cluster.kubectl("logs", "-n", namespace, "read-ckpt").stdout
    assert "epoch-000009.ckpt" in listing, listing  # the fully trained best trial's last checkpoint


def delete_the_operator_and_a_training_pod(cluster, namespace: str) -> str:
    """Faults on the real cluster: the operator's pod deleted (its Deployment starts another, which
    rebuilds from the API), then a trial's pod deleted by hand before its run reported. Returns the trial."""
    operator_pods = f"app.kubernetes.io/instance={RELEASE}"
    before = {p["metadata"]["name"] for p in get(cluster, "pods", OPERATOR_NS, selector=operator_pods)["items"]}
    cluster.kubectl("delete", "pod", "-n", OPERATOR_NS, "-l", operator_pods, "--wait=false")

    def starting():
        # A run that has reported nothing yet (its trainer is loading): deleting its pod certainly ends it
        # short, where a run a few epochs in could finish them (an epoch takes well under a second) first.
        for t in get(cluster, "hpt", namespace)["items"]:
            status = t.get("status") or {}
            mine = [o for o in status.get("observations") or [] if o.get("attempt") == status.get("attempts")]
            if status.get("phase") == "Running" and status.get("pod") and not mine:
                return t["metadata"]["name"], status["pod"], status["attempts"], status.get("until", 0)
        return None

    trial, pod, attempt, until = wait_for(starting, timeout=900, interval=0.5, what="a trial pod starting its run")
    cluster.kubectl("delete", "pod", pod, "-n", namespace, "--wait=false")
    replaced = get(cluster, "pods", OPERATOR_NS, selector=operator_pods)["items"]
    assert {p["metadata"]["name"] for p in replaced} - before, "the Deployment started no new operator pod"
    return trial, attempt, until


def test_helm_uninstall_removes_everything_but_the_crds(cluster, images, release):
    release.uninstall(RELEASE, wait="watcher", timeout=120)
    left = cluster.kubectl("get", "deployment,serviceaccount,role,rolebinding", "-n", OPERATOR_NS,
                           "-l", "app.kubernetes.io/instance=hpo", "-o", "name").stdout
    assert left.strip() == ""
    cluster_left = cluster.kubectl("get", "clusterrole,clusterrolebinding", "-o", "name").stdout
    assert "hpo-hpo-operator" not in cluster_left
    crds = cluster.kubectl("get", "crd", "-o", "name").stdout
    assert "hpoexperiments.hpo.dev" in crds and "hpotrials.hpo.dev" in crds
