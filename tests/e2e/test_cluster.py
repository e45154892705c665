"""The user's path on a real cluster: helm install, kubectl apply an example, watch it finish, helm uninstall.

Trial pods run the real trainer image (the digits MLP on the node's CPU: no
GPU here, but each pod requests `nvidia.com/gpu: 1`, which the node
advertises as an extended resource, so scheduling and accounting are real).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections import Counter

import pytest
import yaml

from support.kube_tools import wait_for
from support.paths import REPO
from support.scrape import Scrape

import helm_python as helm  # noqa: E402  (a test dependency: without it this tier fails, never skips)
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


def end_of(cluster, namespace: str, name: str):
    """The experiment's status once it has ended (Succeeded or Failed), else None: a ``wait_for`` predicate."""
    status = get(cluster, "hpx", namespace, name).get("status") or {}
    return status if status.get("phase") in ("Succeeded", "Failed") else None


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
    mine = {"namespace": namespace, "experiment": name}
    # The new operator pod's metrics, through the chart's Service, once it has acted on something.
    during = wait_for(lambda: (s := operator_metrics(cluster)) and s.total("hpo_observations_ingested_total", **mine)
                      and s, timeout=600, interval=2, what="the new operator's metrics to count observations")

    started = time.monotonic()
    phase = wait_for(lambda: end_of(cluster, namespace, name), timeout=1200, interval=5,
                     what=f"experiment {name} to finish")["phase"]
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
    for trial, firsts in resumed:
        # Every run after a trial's first recorded one continues from the checkpoint, not from epoch 1. (The
        # first recorded run can be a retry from epoch 1: the deleted pod's run recorded nothing.)
        assert all(firsts[a] > 1 for a in sorted(firsts)[1:]), (trial, firsts)
    assert any((trial, "Paused") in reasons and (trial, "Resumed") in reasons for trial, _ in resumed), reasons

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
    assert_columns_add_up(cluster, namespace, name, status, len(trials))
    assert_metrics_moved_and_match_the_trials(cluster, mine, during, hpt)
    assert_events_tell_every_ending(events, trials, name)
    assert_normal_finish_logs_no_warning(cluster)

    # The checkpoint really is on the volume: a pod mounting the best trial's claim reads it.
    assert_checkpoint_on_claim(cluster, namespace, claim, images["trainer"])


def operator_metrics(cluster):
    """The operator's /metrics through its Service (the API server's service proxy); None while unanswered."""
    out = cluster.kubectl("get", "--raw", f"/api/v1/namespaces/{OPERATOR_NS}/services/{RELEASE}-hpo-operator-metrics:"
                          "metrics/proxy/metrics", check=False)
    return Scrape(out.stdout) if out.returncode == 0 else None


def assert_metrics_moved_and_match_the_trials(cluster, mine: dict, during: Scrape, hpt_table: str) -> None:
    """What the operator counted since the first scrape grew, and its trials by phase are `kubectl get hpt`'s."""
    final = operator_metrics(cluster)
    for counter in ("hpo_observations_ingested_total", "hpo_decisions_total", "hpo_launches_total",
                    "hpo_run_ends_total"):
        assert final.total(counter, **mine) > during.total(counter, **mine), counter
    assert final.total("hpo_step_duration_seconds_count") > during.total("hpo_step_duration_seconds_count")
    assert final.total("hpo_decision_latency_seconds_count") > 0
    assert final.total("hpo_api_requests_total", verb="create", resource="pods", code="201") > 0
    header, *rows = hpt_table.splitlines()
    column = header.split().index("PHASE")
    shown = Counter(row.split()[column] for row in rows)
    gauge = {phase: int(v) for phase, v in final.by("hpo_trials", "phase", **mine).items() if v}
    assert gauge == dict(shown), (gauge, hpt_table)


def assert_columns_add_up(cluster, namespace: str, name: str, status: dict, created: int) -> None:
    """`kubectl get hpx`: Done is ended/maxTrials, and the per-phase columns account for every trial."""
    header, row = cluster.kubectl("get", "hpx", name, "-n", namespace).stdout.splitlines()[:2]
    columns = dict(zip(header.split(), row.split()))  # kubectl prints the names in capitals
    counted = sum(int(columns[c]) for c in ("RUNNING", "PAUSED", "STOPPED", "COMPLETED", "FAILED"))
    assert counted == created == status["trials"]["created"], (columns, created)
    ended = sum(int(columns[c]) for c in ("STOPPED", "COMPLETED", "FAILED"))
    assert columns["DONE"] == f"{ended}/{created}", columns  # every trial of maxTrials ran


def assert_events_tell_every_ending(events: list[dict], trials: list[dict], experiment: str) -> None:
    """A Normal event for every trial's final phase (on the trial, or in one naming it on the experiment),
    one for the experiment's, grouped events naming each trial once, and no scheduler warning."""
    told: dict[str, set] = {}
    for e in events:
        target = e["involvedObject"]["name"]
        if target == experiment and " trials: " in e["message"]:
            named = [item.split(" (")[0] for item in e["message"].split(" trials: ", 1)[1].split("; ")
                     if not item.startswith("and ")]
            assert len(named) == len(set(named)), e["message"]  # a grouped event names a trial once
            for trial in named:
                told.setdefault(trial, set()).add(e["reason"])
        else:
            told.setdefault(target, set()).add(e["reason"])
    for t in trials:
        phase = t["status"]["phase"]
        assert phase in told.get(t["metadata"]["name"], set()), (t["metadata"]["name"], phase, told)
    assert "Succeeded" in told.get(experiment, set()), told.get(experiment)
    assert not [e for e in events if e["reason"] == "FailedScheduling"], \
        [e["message"] for e in events if e["reason"] == "FailedScheduling"]


def operator_log(cluster) -> str:
    """The running operator pods' logs, read pod by pod. A label-selected `kubectl logs` fails outright when
    any one pod's log cannot be read at that moment (a replaced pod still going away), and says nothing
    about which; here a pod's read is retried and a lasting failure names the pod and kubectl's error."""
    pods = get(cluster, "pods", OPERATOR_NS, selector=f"app.kubernetes.io/instance={RELEASE}")["items"]
    running = [p["metadata"]["name"] for p in pods
               if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
    assert running, [(p["metadata"]["name"], p["status"].get("phase")) for p in pods]
    logs = []
    for pod in running:
        for _ in range(5):
            out = cluster.kubectl("logs", "-n", OPERATOR_NS, pod, "--tail=-1", check=False)
            if out.returncode == 0:
                break
            time.sleep(2)
        assert out.returncode == 0, (pod, out.stderr)
        logs.append(out.stdout)
    return "\n".join(logs)


def assert_normal_finish_logs_no_warning(cluster) -> None:
    log = operator_log(cluster)
    assert "Finished experiment" in log, log[-2000:]
    assert not [line for line in log.splitlines() if "WARNING" in line], \
        [line for line in log.splitlines() if "WARNING" in line][:10]


# Run inside a container with the sidecar's token on stdin: who am I, and where could I read that token?
# Other containers' files are tried through /proc/<pid>/root, with every link resolved the way the kernel
# would inside that root (an absolute link such as /var/run -> /run is re-rooted there, not followed into
# the prober's own file system), and each candidate opened through the kernel.
TOKEN_PROBE = r"""
import json, os, sys
token = sys.stdin.read().strip().encode()
hits, refused = [], []
def holds_token(path):
    try:
        with open(path, "rb") as fh:
            if token in fh.read(65536 * 4):
                hits.append(path)
    except OSError as err:
        refused.append(f"{path}: {err.strerror}")
# My own files: a token can only come in through a mount (the image's root file system has none), so
# every file under every mount point but the root, /proc and /sys is read.
with open("/proc/self/mounts") as fh:
    mounts = sorted({line.split()[1] for line in fh})
for mount in mounts:
    if mount == "/" or mount.startswith(("/proc", "/sys")):
        continue
    for root, dirs, files in os.walk(mount):
        for f in files:
            path = os.path.join(root, f)
            if os.path.isfile(path) and os.path.getsize(path) <= 65536:
                holds_token(path)
def resolve_in(root, path, depth=0):
    # path inside root, its links resolved component by component as seen from inside root
    parts, done = [p for p in path.split("/") if p], ""
    while parts:
        part = parts.pop(0)
        candidate = f"{done}/{part}"
        try:
            target = os.readlink(root + candidate)
        except OSError:  # not a link, or not readable: keep it and let open() decide
            done = candidate
            continue
        if depth > 40:
            break
        base = "" if target.startswith("/") else done
        return resolve_in(root, f"{base}/{target}/" + "/".join(parts), depth + 1)
    return root + done
def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""
me = str(os.getpid())
pids = [p for p in filter(str.isdigit, os.listdir("/proc")) if p != me]
for pid in pids:  # other containers' files, fds and environment, through the shared process namespace
    root = f"/proc/{pid}/root"
    for path in (sys.argv[1] + "/token", "/run/secrets/hpo.dev/serviceaccount/token",
                 "/var/run/secrets/hpo.dev/serviceaccount/token"):
        holds_token(resolve_in(root, path))
    holds_token(f"/proc/{pid}/environ")
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError as err:
        refused.append(f"/proc/{pid}/fd: {err.strerror}")
        fds = []
    for fd in fds:
        if os.path.isfile(f"/proc/{pid}/fd/{fd}"):
            holds_token(f"/proc/{pid}/fd/{fd}")
sidecars = [p for p in pids if b"hpo_operator.sidecar" in cmdline(p)]
print(json.dumps({"uid": os.getuid(), "euid": os.geteuid(), "hits": hits, "sidecar_pids": sidecars,
                  "refused": [r for r in refused if "/proc/" in r][:20],
                  "kubernetes_secrets": os.path.exists("/var/run/secrets/kubernetes.io"),
                  "api_env": sorted(k for k in os.environ if k.startswith("KUBERNETES_") and "TOKEN" in k)}))
"""


def assert_trainer_cannot_read_a_token(cluster, namespace: str, experiment: str) -> None:
    """While a trial pod runs: its trainer runs as non-root and can read no API token, anywhere, not even
    through the sidecar's /proc/<pid>/root.

    The same probe in the sidecar container finds the token through /proc/<sidecar pid>/root (the same uid
    may open it), so the probe's route, links and all, does reach the token where nothing forbids it.
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
            if trainer is None or sidecar is None or not sidecar["sidecar_pids"]:
                continue
            assert trainer["sidecar_pids"], trainer  # it sees the sidecar's process, so /proc/<pid>/root was tried
            assert trainer["hits"] == [], trainer
            assert any(f"/proc/{pid}/root" in r for r in trainer["refused"] for pid in trainer["sidecar_pids"]), trainer
            # The probe does find a readable token: the sidecar's own, and through /proc/<its pid>/root.
            assert any(h.startswith("/var/run/secrets/hpo.dev/") or h.startswith("/run/secrets/hpo.dev/")
                       for h in sidecar["hits"]), sidecar
            assert any(h.startswith(f"/proc/{pid}/root/") for h in sidecar["hits"]
                       for pid in sidecar["sidecar_pids"]), sidecar
            assert not trainer["kubernetes_secrets"] and trainer["api_env"] == [], trainer
            assert trainer["uid"] != 0 and trainer["euid"] != 0, trainer
            assert sidecar["uid"] != trainer["uid"], (sidecar["uid"], trainer["uid"])
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


def small_experiment(trainer_image: str, name: str, epochs: int = 3, **budget) -> dict:
    """One digits trial of a few epochs (FIFO, no early stopping) with ``budget``."""
    doc = digits_example(trainer_image)
    doc["metadata"]["name"] = name
    doc["spec"]["scheduler"] = {"algorithm": "fifo", "maxResource": epochs}
    doc["spec"]["budget"] = {"maxTrials": 1, "parallelism": 1, **budget}
    return doc


CRASHING_TRAINER = ("import sys, time\n"
                    "for i in range(300):\n    print(f'loading shard {i}', flush=True)\n"
                    "time.sleep(3)\n"
                    "sys.stderr.write('ValueError: learning_rate must be positive\\n')\n"
                    "sys.exit(1)\n")


def test_bad_image_slow_image_and_crash_surface_where_the_user_looks(cluster, images, release, namespace):
    """Three experiments at once: a trainer image that does not exist (its experiment ends through its
    failure budget with Kubernetes' reason), one that appears on the node 40 s after its pod started (the
    run waits for it: no failure, no epoch lost), and a trainer that crashes (its last output is kept)."""
    late_image = f"hpo-trainer:late-{uuid.uuid4().hex[:6]}"
    bad = small_experiment(images["trainer"], "bad-image", maxRetries=0, maxFailedTrials=0, startTimeout="45s")
    bad["spec"]["trialTemplate"]["spec"]["containers"][0].update(image="hpo-trainr:e2e", imagePullPolicy="Never")
    late = small_experiment(images["trainer"], "late-image", maxRetries=0, maxFailedTrials=0, startTimeout="5m")
    late["spec"]["trialTemplate"]["spec"]["containers"][0].update(image=late_image, imagePullPolicy="Never")
    crash = small_experiment(images["trainer"], "crash", maxRetries=0, maxFailedTrials=0)
    crash["spec"]["trialTemplate"]["spec"]["containers"][0]["command"] = ["python", "-c", CRASHING_TRAINER]
    for doc in (bad, late, crash):
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))

    # The late image appears 40 s after its pod was created (the old sidecar gave up after 10 s).
    pod = wait_for(lambda: get(cluster, "pods", namespace, selector="hpo.dev/experiment=late-image")["items"],
                   timeout=300, interval=1, what="the late-image trial's pod")[0]
    created = time.time()
    while time.time() - created < 40:
        time.sleep(2)
    sidecar = next((c for c in get(cluster, "pod", namespace, pod["metadata"]["name"])["status"]
                    .get("containerStatuses") or [] if c["name"] == "hpo-metrics"), {})
    assert "running" in sidecar.get("state", {}), sidecar  # still waiting for its trainer
    subprocess.run([str(REPO / "tests" / "e2e" / "cluster.sh"), "tag", images["trainer"], late_image], check=True)
    for name in ("bad-image", "late-image", "crash"):
        wait_for(lambda: end_of(cluster, namespace, name), timeout=600, interval=3, what=f"experiment {name} to finish")
    experiments = {x["metadata"]["name"]: x for x in get(cluster, "hpx", namespace)["items"]}
    trials = {t["spec"]["experiment"]: t for t in get(cluster, "hpt", namespace)["items"]}
    events = get(cluster, "events", namespace)["items"]

    def events_of(target):
        return [(e["type"], e["reason"], e["message"]) for e in events if e["involvedObject"]["name"] == target]

    # A bad image: the trial shows Kubernetes' reason (condition and Warning event), the run counts as failed
    # once the pod has not started within startTimeout, and the failure budget ends the experiment.
    status = experiments["bad-image"]["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "MaxFailedTrialsReached"), status
    assert "ErrImageNeverPull" in status["message"] and "did not start within 45 s" in status["message"], status
    trial = trials["bad-image"]
    condition = next(c for c in trial["status"]["conditions"] if c["type"] == "PodProblem")
    assert (condition["status"], condition["reason"]) == ("True", "ErrImageNeverPull"), condition
    assert any(t == "Warning" and r == "ErrImageNeverPull" and "hpo-trainr:e2e" in m
               for t, r, m in events_of(trial["metadata"]["name"])), events_of(trial["metadata"]["name"])
    assert any(r == "Failed" for _, r, _ in events_of("bad-image"))

    # A slow image: the run waited for it, counted no failure and lost no epoch.
    status, trial = experiments["late-image"]["status"], trials["late-image"]
    assert status["phase"] == "Succeeded", (status, events_of(trial["metadata"]["name"]))
    assert trial["status"]["failures"] == 0 and trial["status"]["attempts"] == 1, trial["status"]
    assert [(o["epoch"], o["attempt"]) for o in trial["status"]["observations"]] == [(1, 1), (2, 1), (3, 1)]
    condition = next(c for c in trial["status"]["conditions"] if c["type"] == "PodProblem")
    assert condition["status"] == "False", condition  # shown while the image was missing, cleared once it ran

    # A crash: its last output is on the trial and in its event, its pod is kept for kubectl logs, and its
    # claim goes at the end like a stopped trial's.
    status, trial = experiments["crash"]["status"], trials["crash"]
    assert status["phase"] == "Failed" and "trainer exited 1" in status["message"], status
    output = trial["status"]["lastOutput"]
    assert output.endswith("ValueError: learning_rate must be positive") and len(output) <= 2048, output
    assert "loading shard 299" in output
    failed = [m for t, r, m in events_of(trial["metadata"]["name"]) if t == "Warning" and r == "Failed"]
    assert failed and "ValueError: learning_rate must be positive" in failed[0], events_of(trial["metadata"]["name"])
    logs = cluster.kubectl("logs", "-n", namespace, trial["status"]["pod"], "-c", "trainer").stdout
    assert "loading shard 0" in logs and "ValueError: learning_rate must be positive" in logs
    claim = get(cluster, "pvc", namespace, selector=f"hpo.dev/trial={trial['metadata']['name']}")["items"]
    assert not claim or claim[0]["metadata"].get("deletionTimestamp"), claim  # in use by the kept pod: going


def test_an_api_server_restart_mid_run_loses_nothing(cluster, images, release, namespace):
    """The control plane restarted while trials train (an upgrade, a crashed control-plane node): the
    operator carries on in the same container, the sidecars keep every epoch, and the experiment ends."""
    doc = digits_example(images["trainer"])
    doc["metadata"]["name"] = "api-restart"
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
    wait_for(lambda: any((t.get("status") or {}).get("observations") for t in get(cluster, "hpt", namespace)["items"]),
             timeout=600, interval=1, what="a first observation")
    operator = f"app.kubernetes.io/instance={RELEASE}"

    def containers():
        return {(p["metadata"]["name"], c["restartCount"]) for p in get(cluster, "pods", OPERATOR_NS, selector=operator)
                ["items"] for c in p["status"]["containerStatuses"]}

    before = containers()
    subprocess.run([str(REPO / "tests" / "e2e" / "cluster.sh"), "restart-apiserver"], check=True, timeout=300)
    assert (get(cluster, "hpx", namespace, "api-restart").get("status") or {}).get("phase") == "Running"
    status = wait_for(lambda: end_of(cluster, namespace, "api-restart"), timeout=900, interval=3,
                      what="the experiment to end")
    assert status["phase"] == "Succeeded", status
    assert containers() == before, operator_log(cluster)[-3000:]  # not restarted, nor replaced
    for trial in get(cluster, "hpt", namespace)["items"]:
        epochs = [o["epoch"] for o in trial["status"].get("observations") or []]
        assert epochs == list(range(1, len(epochs) + 1)), (trial["metadata"]["name"], epochs)  # none lost or twice


def test_helm_uninstall_leaves_running_experiments_deletable_and_removes_everything_but_the_crds(
        cluster, images, release, namespace):
    # An experiment still running when the operator goes.
    doc = small_experiment(images["trainer"], "orphan")
    doc["spec"]["trialTemplate"]["spec"]["containers"][0]["command"] = ["python", "-c", "import time; time.sleep(3600)"]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
    wait_for(lambda: [p for p in get(cluster, "pods", namespace, selector="hpo.dev/experiment=orphan")["items"]
                      if p["status"].get("phase") == "Running"], timeout=300, interval=2, what="a running trial pod")
    sidecar_identity = "serviceaccount/hpo-trial-sidecar", "role/hpo-trial-sidecar", "rolebinding/hpo-trial-sidecar"
    for obj in sidecar_identity:
        owners = json.loads(cluster.kubectl("get", obj, "-n", namespace, "-o", "json").stdout)["metadata"]
        assert [o["name"] for o in owners.get("ownerReferences") or []] == ["orphan"], (obj, owners)
    assert not get(cluster, "hpx", namespace, "orphan")["metadata"].get("finalizers")

    release.uninstall(RELEASE, wait="watcher", timeout=120)
    left = cluster.kubectl("get", "deployment,serviceaccount,service,role,rolebinding", "-n", OPERATOR_NS,
                           "-l", "app.kubernetes.io/instance=hpo", "-o", "name").stdout
    assert left.strip() == ""
    cluster_left = cluster.kubectl("get", "clusterrole,clusterrolebinding", "-o", "name").stdout
    assert "hpo-hpo-operator" not in cluster_left
    crds = cluster.kubectl("get", "crd", "-o", "name").stdout
    assert "hpoexperiments.hpo.dev" in crds and "hpotrials.hpo.dev" in crds

    # With no operator left, the experiment is deleted at once, and the garbage collector takes its trials,
    # claims and pods, and the sidecar's identity it owned.
    cluster.kubectl("delete", "hpx", "orphan", "-n", namespace, "--timeout=60s")

    def leftovers():
        return (cluster.kubectl("get", "hpt,pods,pvc,role,rolebinding", "-n", namespace, "-o", "name").stdout.split()
                + cluster.kubectl("get", "serviceaccount", "hpo-trial-sidecar", "-n", namespace, "-o", "name",
                                  "--ignore-not-found").stdout.split())

    wait_for(lambda: not leftovers(), timeout=180, interval=3, what="the experiment's objects to be collected")
