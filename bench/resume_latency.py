"""What a resume costs on a real cluster: from the operator's decision to the resumed trainer's first epoch.

Runs the digits example with ASHA (promotion type, eta 2, epochs 1..16, so
about as many promotions as trials) on a cluster where the operator runs,
with HPO_TRACE=1 in the trainer (hpo_trainer/trace.py logs its start-up
marks). Two experiments, one after the other:

- ``pause``: promoteInPlace false, every promotion is a pause and a resume in
  a new pod that loads the checkpoint from the trial's claim;
- ``inplace``: promoteInPlace true, a trial promoted the moment it reaches a
  rung continues in the same pod.

Before them, ``--bare-pods`` pods of the same trainer image (same command,
resources and GPU request, no operator, no claim, no sidecar) start one at a
time: what any pod of that image needs, the floor for a resume.

While they run it watches trials, pods and Events in the namespace and
follows each trainer's log, stamping everything with the time it arrived
(wall clock of this machine; on a multi-node cluster the nodes' clocks must
be synchronised). It saves that recording (``--record``) and prints, from it
(bench/resume_timeline.py): per resume, the seconds from the decision to pod
created, scheduled, containers started, trainer process started, its first
line, checkpoint loaded, first epoch reported (by the trainer) and recorded
(in the trial's status); p50/p95/max; the same for promotions in place; the
epoch time of the same trainer.

On the e2e cluster, everything (cluster, images built from this checkout,
chart) in one command:

    .venv/bin/python bench/resume_latency.py --setup

On a cluster that already runs the operator, with a trainer image built from
this checkout loaded on its nodes:

    .venv/bin/python bench/resume_latency.py --kubeconfig PATH --trainer-image hpo-trainer:e2e

A trainer image against a baseline image (say, one built from an earlier
tree) in the same run, side by side, as the machine's load may change from
one run to the next by more than the difference:

    .venv/bin/python bench/resume_latency.py --kubeconfig PATH --trainer-image NEW --baseline-image OLD --modes pause

Again from a recording, without a cluster:

    .venv/bin/python bench/resume_latency.py --analyse /tmp/resume-latency.jsonl
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import yaml

from hpo_operator.controller.builders import DEFAULT_UID, harden, quantities_as_strings
from hpo_operator.resources import GROUP, VERSION
from resume_timeline import compare, parse_trace_line, report

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "digits-asha.yaml"
CLUSTER_SH = REPO / "tests" / "e2e" / "cluster.sh"
CHART = REPO / "helm" / "hpo-operator"
BARE_PREFIX = "bare-"
BASE_BARE_PREFIX = "base-bare-"  # bare pods of --baseline-image
BASELINE = "base"  # the mode of the pause experiment with --baseline-image
OPERATOR_NAMESPACE = "hpo-system"
RELEASE = "hpo"
EXPERIMENT_PREFIX = "resume-"  # + the mode: the experiment; + "-NNNN": its trials
TRAINER = "trainer"


# --- what is recorded -------------------------------------------------------------

def trial_record(obj: dict) -> dict:
    status = obj.get("status") or {}
    observations = [[o.get("epoch"), o.get("attempt")] for o in status.get("observations") or []]
    return {"kind": "trial", "name": obj["metadata"]["name"], "phase": status.get("phase"),
            "pod": status.get("pod"), "until": status.get("until"), "decided": status.get("decidedEpoch"),
            "observations": observations}


def pod_record(obj: dict, deleted: bool = False) -> dict:
    status = obj.get("status") or {}
    trainer = "waiting"
    for c in status.get("containerStatuses") or []:
        if c.get("name") == TRAINER:
            state = c.get("state") or {}
            trainer = "terminated" if "terminated" in state else "running" if "running" in state else "waiting"
    record = {"kind": "pod", "name": obj["metadata"]["name"], "scheduled": bool((obj.get("spec") or {}).get("nodeName")),
              "trainer": trainer, "phase": status.get("phase")}
    if deleted:
        record["deleted"] = True
    return record


def event_record(obj: dict) -> dict:
    return {"kind": "event", "name": (obj.get("involvedObject") or {}).get("name"), "reason": obj.get("reason"),
            "message": obj.get("message")}


class Recording:
    """Records in arrival order, each stamped with its arrival time; appended to a JSON-lines file as they come."""

    def __init__(self, path: Path):
        self.path = path
        self.records: list[dict] = []
        self._lock = threading.Lock()
        self._file = open(path, "a", buffering=1)  # noqa: SIM115 (closed by close())

    def add(self, record: dict) -> None:
        record = {"t": time.time(), **record}
        with self._lock:
            self.records.append(record)
            self._file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self._file.close()


# --- watching the cluster -----------------------------------------------------------

class Watcher:
    """Watches trials, pods and Events of one namespace and follows every trainer's log until stopped."""

    def __init__(self, api, namespace: str, recording: Recording):
        from kubernetes import client

        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.recording = recording
        self.stop = threading.Event()
        self.following: set[str] = set()
        self.events_seen: set[str] = set()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        ns = self.namespace
        streams = (
            (lambda **kw: self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, "hpotrials", **kw),
             self._on_trial),
            (lambda **kw: self.core.list_namespaced_pod(ns, **kw), self._on_pod),
            (lambda **kw: self.core.list_namespaced_event(ns, **kw), self._on_event),
        )
        for list_fn, handle in streams:
            self._spawn(self._watch, list_fn, handle)

    def close(self) -> None:
        self.stop.set()
        deadline = time.monotonic() + 15  # in all: a log still followed ends with its pod, not with `stop`
        for thread in self.threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _watch(self, list_fn, handle) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        version = None
        while not self.stop.is_set():
            w = watch.Watch()
            try:
                for event in w.stream(list_fn, resource_version=version, timeout_seconds=5):
                    handle(event["type"], event["raw_object"])
                    if self.stop.is_set():
                        break
                version = w.resource_version
            except ApiException as error:
                if error.status == 410:  # too old: list again (duplicates are harmless, first sightings count)
                    version = None
                else:
                    self.recording.add({"kind": "error", "what": "watch", "message": str(error)[:300]})
                    time.sleep(1)

    def _on_trial(self, kind: str, obj: dict) -> None:
        if kind != "DELETED":
            self.recording.add(trial_record(obj))

    def _on_event(self, kind: str, obj: dict) -> None:
        uid = (obj.get("metadata") or {}).get("uid")
        if kind == "ADDED" and uid not in self.events_seen:  # a re-list sends every Event again as ADDED
            self.events_seen.add(uid)
            self.recording.add(event_record(obj))

    def _on_pod(self, kind: str, obj: dict) -> None:
        record = pod_record(obj, deleted=kind == "DELETED")
        self.recording.add(record)
        name = record["name"]
        if record["trainer"] != "waiting" and name not in self.following:
            self.following.add(name)
            self._spawn(self._follow_log, name)

    def _follow_log(self, pod: str) -> None:
        """Read the trainer's log as it is written; each trace line is recorded (the pod may go any moment)."""
        try:
            stream = self.core.read_namespaced_pod_log(pod, self.namespace, container=TRAINER, follow=True,
                                                       _preload_content=False)
            for raw in _lines(stream):
                fields = parse_trace_line(raw)
                if fields is not None:
                    self.recording.add({"kind": "trace", "pod": pod, **fields})
        except Exception as error:  # noqa: BLE001 (a vanished pod ends its log; say so and go on)
            self.recording.add({"kind": "error", "what": f"log of {pod}", "message": str(error)[:300]})


def _lines(response):
    pending = b""
    for chunk in response.stream(4096):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode("utf-8", "replace")
    if pending:
        yield pending.decode("utf-8", "replace")


# --- what runs ----------------------------------------------------------------------

def experiment_manifest(name: str, trainer_image: str, trials: int, parallelism: int, in_place: bool) -> dict:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["name"] = name
    spec = doc["spec"]
    spec["scheduler"].update(reductionFactor=2, minResource=1, maxResource=16, promoteInPlace=in_place)
    spec["budget"].update(maxTrials=trials, parallelism=parallelism, maxDuration="60m")
    trainer = spec["trialTemplate"]["spec"]["containers"][0]
    trainer["image"] = trainer_image
    trainer["imagePullPolicy"] = "IfNotPresent"
    trainer["resources"]["requests"] = {"cpu": "100m", "memory": "256Mi"}
    trainer["env"] = [e for e in trainer.get("env") or [] if e.get("name") != "HPO_TRACE"] + [
        {"name": "HPO_TRACE", "value": "1"}]
    return doc


def bare_pod(name: str, experiment: dict) -> dict:
    """The trial's trainer container in a pod of its own: one fresh epoch into an emptyDir, nothing else."""
    trainer = copy.deepcopy(experiment["spec"]["trialTemplate"]["spec"]["containers"][0])
    trainer["env"] = trainer.get("env", []) + [
        {"name": "HPO_UNTIL_EPOCH", "value": "1"},
        {"name": "HPO_CHECKPOINT_DIR", "value": "/work/checkpoints"},
        {"name": "HPO_METRICS_FILE", "value": "/work/metrics.jsonl"},
    ]
    trainer["volumeMounts"] = [{"name": "work", "mountPath": "/work"}]
    harden(trainer, set())  # as the operator hardens a trial's trainer (and no more: torch needs a writable /tmp)
    spec = {"restartPolicy": "Never", "containers": [trainer], "volumes": [{"name": "work", "emptyDir": {}}],
            "securityContext": {"runAsNonRoot": True, "runAsUser": DEFAULT_UID, "fsGroup": DEFAULT_UID,
                                "seccompProfile": {"type": "RuntimeDefault"}}}
    quantities_as_strings(spec)  # `nvidia.com/gpu: 1` from the YAML: the client wants quantity strings
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def run_bare_pods(core, namespace: str, experiments: dict[str, dict], count: int, timeout: float) -> None:
    """`count` bare pods per image (prefix -> experiment), one at a time, the images taking turns."""
    for i in range(count):
        for prefix, experiment in experiments.items():
            run_bare_pod(core, namespace, f"{prefix}{i}", experiment, timeout)


def run_bare_pod(core, namespace: str, name: str, experiment: dict, timeout: float) -> None:
    core.create_namespaced_pod(namespace, bare_pod(name, experiment))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        phase = core.read_namespaced_pod(name, namespace).status.phase
        if phase in ("Succeeded", "Failed"):
            break
        time.sleep(0.5)
    else:
        raise SystemExit(f"bare pod {name} did not finish within {timeout:.0f} s")
    if phase == "Failed":
        log = core.read_namespaced_pod_log(name, namespace, container=TRAINER, tail_lines=20)
        raise SystemExit(f"bare pod {name} failed; the end of its log:\n{log}")
    time.sleep(1)  # let the log follower read the last lines
    core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)


def run_experiments(custom, namespace: str, docs: dict[str, dict], recording: Recording, timeout: float) -> None:
    """Start every experiment of `docs` (mode -> manifest) at once; mark each one's start and end."""
    for mode, doc in docs.items():
        spec = doc["spec"]
        print(f"experiment {doc['metadata']['name']}: {spec['budget']['maxTrials']} trials, parallelism "
              f"{spec['budget']['parallelism']}, image {spec['trialTemplate']['spec']['containers'][0]['image']}",
              file=sys.stderr)
        recording.add({"kind": "mark", "what": f"start {mode}", "experiment": doc["metadata"]["name"]})
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "hpoexperiments", doc)
    running = dict(docs)
    deadline = time.monotonic() + timeout
    while running and time.monotonic() < deadline:
        time.sleep(2)
        for mode, doc in list(running.items()):
            name = doc["metadata"]["name"]
            status = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "hpoexperiments", name)
            phase = (status.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                recording.add({"kind": "mark", "what": f"end {mode}", "phase": phase})
                print(f"experiment {name}: {phase}", file=sys.stderr)
                del running[mode]
    if running:
        raise SystemExit(f"experiments {sorted(running)} did not finish within {timeout:.0f} s")


# --- --setup: the e2e cluster, images from this checkout, the chart --------------------

def _run(cmd: list[str], timeout: float) -> str:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}")
    return proc.stdout


def setup_cluster(tag: str) -> tuple[str, str]:
    """As tests/e2e does: cluster up, both images built and loaded, the chart installed. (kubeconfig, trainer image)"""
    import helm_python as helm

    _run([str(CLUSTER_SH), "up"], timeout=1800)
    kubeconfig = _run([str(CLUSTER_SH), "kubeconfig"], timeout=60).strip().splitlines()[-1]
    out = _run([str(REPO / "scripts" / "build-images.sh"), "--tag", tag], timeout=2400)
    archives = [line for line in out.splitlines() if line.endswith(".tar")]
    if len(archives) != 2:
        raise SystemExit(f"build-images.sh printed {archives}, expected two archives")
    _run([str(CLUSTER_SH), "load", *archives], timeout=900)
    config = helm.Config(kubeconfig_path=kubeconfig, namespace=OPERATOR_NAMESPACE)
    values = {"image": {"repository": "hpo-operator", "tag": tag, "pullPolicy": "Never"}}
    if any(release["name"] == RELEASE for release in config.list(name_filter=f"^{RELEASE}$")):
        # A second --setup: same tag, new image content; the operator's pods restart to run it. Helm never
        # upgrades CRDs, so they are applied first.
        _run(["kubectl", "--kubeconfig", kubeconfig, "apply", "--server-side", "--force-conflicts",
              "-f", str(CHART / "crds")], timeout=120)
        config.upgrade(str(CHART), RELEASE, values, namespace=OPERATOR_NAMESPACE, wait="watcher", timeout=300)
        restart_operator(kubeconfig)
    else:
        config.install(str(CHART), RELEASE, values, namespace=OPERATOR_NAMESPACE, create_namespace=True,
                       wait="watcher", timeout=300)
    return kubeconfig, f"hpo-trainer:{tag}"


def restart_operator(kubeconfig: str, timeout: float = 300) -> None:
    """What `kubectl rollout restart` does, then wait until the new pods are available."""
    from kubernetes import client, config

    apps = client.AppsV1Api(config.new_client_from_config(kubeconfig))
    stamp = {"spec": {"template": {"metadata": {"annotations": {"hpo-bench/restarted-at": str(time.time())}}}}}
    for deployment in apps.list_namespaced_deployment(OPERATOR_NAMESPACE).items:
        apps.patch_namespaced_deployment(deployment.metadata.name, OPERATOR_NAMESPACE, stamp)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(2)
        if all((d.status.observed_generation or 0) >= d.metadata.generation
               and (d.status.updated_replicas or 0) == d.spec.replicas == (d.status.available_replicas or 0)
               and not (d.status.replicas or 0) > d.spec.replicas
               for d in apps.list_namespaced_deployment(OPERATOR_NAMESPACE).items):
            return
    raise SystemExit(f"the operator's deployment in {OPERATOR_NAMESPACE} did not roll out within {timeout:.0f} s")


# --- main ---------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setup", action="store_true",
                        help="bring up the e2e cluster (tests/e2e/cluster.sh), build and load both images from "
                             "this checkout, install the chart; then measure")
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"), help="default: $KUBECONFIG")
    parser.add_argument("--trainer-image", default="hpo-trainer:e2e", help="present on the nodes (default %(default)s)")
    parser.add_argument("--trials", type=int, default=36, help="maxTrials of each experiment (default %(default)s)")
    parser.add_argument("--parallelism", type=int, default=2, help="default %(default)s")
    parser.add_argument("--bare-pods", type=int, default=10, help="bare pods started one at a time (default %(default)s)")
    parser.add_argument("--baseline-image", default=None,
                        help="another trainer image to compare with in the same run: its bare pods take turns "
                             "with the others, and a pause experiment with it runs side by side with 'pause' "
                             "(each with half the parallelism)")
    parser.add_argument("--modes", default="pause,inplace", help="experiments to run: pause, inplace (default both)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per experiment (default %(default)s)")
    parser.add_argument("--record", type=Path, default=None,
                        help="JSON-lines file for the recording (default /tmp/resume-latency-<time>.jsonl)")
    parser.add_argument("--analyse", type=Path, default=None, help="print the figures of a recording and exit")
    parser.add_argument("--keep", action="store_true", help="leave the namespace for inspection")
    args = parser.parse_args()

    if args.analyse is not None:
        records = [json.loads(line) for line in args.analyse.read_text().splitlines() if line.strip()]
        print_report(records)
        return
    modes = [m for m in args.modes.split(",") if m]
    if not modes or set(modes) - {"pause", "inplace"}:
        parser.error(f"--modes: choose from pause, inplace, not {args.modes!r}")
    if args.trials < 2 or args.parallelism < 1 or args.bare_pods < 0:
        parser.error("--trials must be at least 2, --parallelism at least 1, --bare-pods 0 or more")
    if args.setup:
        args.kubeconfig, args.trainer_image = setup_cluster("bench")
    if not args.kubeconfig:
        parser.error("no cluster: give --kubeconfig (or set KUBECONFIG), or --setup for the e2e cluster")

    from kubernetes import client, config

    api = config.new_client_from_config(args.kubeconfig)
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    namespace = f"resume-bench-{uuid.uuid4().hex[:6]}"
    path = args.record or Path(f"/tmp/resume-latency-{time.strftime('%Y%m%dT%H%M%S')}.jsonl")
    recording = Recording(path)
    core.create_namespace({"metadata": {"name": namespace}})
    watcher = Watcher(api, namespace, recording)
    watcher.start()
    print(f"namespace {namespace}; recording to {path}", file=sys.stderr)
    try:
        docs = {m: experiment_manifest(f"{EXPERIMENT_PREFIX}{m}", args.trainer_image, args.trials, args.parallelism,
                                       in_place=m == "inplace") for m in modes}
        bare = {BARE_PREFIX: next(iter(docs.values()))}
        groups = [{m: docs[m]} for m in modes]
        if args.baseline_image:
            # Side by side, half the parallelism each: both see the same machine at the same time.
            half = max(1, args.parallelism // 2)
            base = experiment_manifest(f"{EXPERIMENT_PREFIX}{BASELINE}", args.baseline_image, args.trials, half,
                                       in_place=False)
            bare[BASE_BARE_PREFIX] = base
            if "pause" in docs:
                docs["pause"]["spec"]["budget"]["parallelism"] = half
                groups[modes.index("pause")][BASELINE] = base
        if args.bare_pods:
            print(f"{args.bare_pods} bare pods of each image, one at a time", file=sys.stderr)
            run_bare_pods(core, namespace, bare, args.bare_pods, timeout=600)
        for group in groups:
            run_experiments(custom, namespace, group, recording, args.timeout)
        time.sleep(3)  # the last watch events and log lines
    finally:
        watcher.close()
        recording.close()
        if not args.keep:
            core.delete_namespace(namespace)
    print_report(recording.records)
    print(f"recording: {path} (again with --analyse)")


def print_report(records: list[dict]) -> None:
    """The figures of each experiment in the recording, the bare pods with the first (the baseline image's with
    the baseline); then, with a baseline, each stage's p50 against it."""
    modes = [r["what"].split(" ", 1)[1] for r in records if r["kind"] == "mark" and r["what"].startswith("start ")]
    starts = {r["what"]: r for r in records if r["kind"] == "mark"}
    first = next((m for m in modes if m != BASELINE), None)
    parts = {}
    for mode in modes:
        ended = starts.get(f"end {mode}", {})
        prefix = BASE_BARE_PREFIX if mode == BASELINE else BARE_PREFIX if mode == first else None
        parts[mode] = _between(records, f"start {mode}", f"end {mode}") + (_bare(records) if prefix else [])
        print(f"== {mode}: promoteInPlace {'true' if mode == 'inplace' else 'false'}, "
              f"{'baseline image, ' if mode == BASELINE else ''}experiment {ended.get('phase', 'unfinished')} ==")
        print(report(parts[mode], bare_prefix=prefix))
        print()
    if BASELINE in parts and "pause" in parts:
        print("== pause against the baseline image, same run ==")
        print(compare(parts["pause"], parts[BASELINE], BARE_PREFIX, BASE_BARE_PREFIX))
        print()


def _between(records: list[dict], start: str, end: str) -> list[dict]:
    """Records of one experiment: from its start mark to a few seconds after its end mark."""
    begin = next(r["t"] for r in records if r["kind"] == "mark" and r["what"] == start)
    finish = next((r["t"] for r in records if r["kind"] == "mark" and r["what"] == end), float("inf"))
    # Its own trials and pods only: the watches re-list, so the other experiment's objects come again.
    experiment = next(r for r in records if r["kind"] == "mark" and r["what"] == start).get("experiment")
    return [r for r in records if begin <= r["t"] <= finish + 3 and not _is_bare(r)
            and (experiment is None or str(_name(r)) == experiment or str(_name(r)).startswith(f"{experiment}-"))]


def _bare(records: list[dict]) -> list[dict]:
    return [r for r in records if _is_bare(r)]


def _name(record: dict):
    """The trial or pod a record is about (its experiment's name is its prefix)."""
    return record.get("pod") if record["kind"] == "trace" else record.get("name")


def _is_bare(record: dict) -> bool:
    name = _name(record)
    return isinstance(name, str) and name.startswith((BARE_PREFIX, BASE_BARE_PREFIX))


if __name__ == "__main__":
    main()
