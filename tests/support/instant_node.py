"""TEST DOUBLE of a node for scale benchmarks: runs trial pods instantly, without processes.

The scale benchmark needs a thousand trial pods running at once on a
2-core machine, so it cannot start a trainer and a sidecar process per pod
(tests/support/node_double.py does that for the correctness tests). This
double plays kubelet, trainer and sidecar in one process: for each trial pod
it sees (one raw watch on labelled pods in every namespace) it marks the pod
Running, appends one observation per epoch to the trial's status with the
REAL sidecar's JSON patch (``observation_patch``, on the status subresource),
taking values from a learning-curve table row, and marks the pod Succeeded
after its last epoch. At that epoch it waits, as the SDK's trainer does, for
the operator's decision (``status.decidedEpoch``/``until``, seen through a
watch on trials) and continues if it was promoted in place. Deleted pods stop reporting and are removed (no kubelet
finishes a graceful deletion).

Every write and every deletion it sees is timestamped (time.monotonic), so
the benchmark can measure how long the operator takes to act.
"""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional

from kubernetes import client
from kubernetes.client.rest import ApiException

from hpo_operator import resources
from hpo_operator.controller.builders import LABEL_ATTEMPT, LABEL_EXPERIMENT, LABEL_TRIAL
from hpo_operator.sidecar.reporter import observation_patch
from hpo_trainer import contract
from hpo_trainer.metrics import MetricRecord

GROUP, VERSION = resources.GROUP, resources.VERSION
JSON_PATCH = "application/json-patch+json"

PodKey = tuple[str, str]  # (namespace, pod name)


@dataclass
class PodRun:
    key: PodKey
    trial: str
    attempt: int
    row: int
    epoch: int  # last epoch reported
    until: int
    deleted: bool = False
    waiting_since: float = 0.0  # at until: when it started waiting for the decision


@dataclass
class Timeline:
    """When things happened (time.monotonic), for latency figures."""

    written: dict[tuple[str, str, int], float] = field(default_factory=dict)  # (ns, pod, epoch) -> observation on record
    decided: dict[tuple[str, str, int], float] = field(default_factory=dict)  # (ns, trial, epoch) -> decision seen
    done: dict[PodKey, float] = field(default_factory=dict)  # pod marked Succeeded
    created: dict[PodKey, float] = field(default_factory=dict)  # pod first seen
    deleted: dict[PodKey, float] = field(default_factory=dict)  # deletion first seen


class InstantNode:
    def __init__(self, api: client.ApiClient, curves: list[list[float]], epoch_seconds: Callable[[str], float],
                 workers: int = 8):
        """``epoch_seconds(namespace)``: how long an epoch takes for pods of that namespace."""
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.curves = curves
        self.epoch_seconds = epoch_seconds
        self.timeline = Timeline()
        self.errors: list[str] = []
        self.runs: dict[PodKey, PodRun] = {}
        self.decisions: dict[tuple[str, str], tuple[int, int]] = {}  # (ns, trial) -> (decidedEpoch, until)
        self._lock = threading.Lock()
        self._heap: list = []
        self._seq = itertools.count()
        self._wake = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="instant-node")
        pods = lambda **kw: self.core.list_pod_for_all_namespaces(label_selector=LABEL_EXPERIMENT, **kw)  # noqa: E731
        trials = lambda **kw: self.custom.list_cluster_custom_object(GROUP, VERSION, "hpotrials", **kw)  # noqa: E731
        self._threads = [threading.Thread(target=self._watch, args=(pods, self._on_pod), daemon=True),
                         threading.Thread(target=self._watch, args=(trials, self._on_trial), daemon=True),
                         threading.Thread(target=self._dispatch, daemon=True)]

    def __enter__(self) -> "InstantNode":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # ---- watching pods and trials ----------------------------------------------
    def _watch(self, list_objects, on_event) -> None:
        version = None
        while not self._stop.is_set():
            try:
                if version is None:
                    listing = json.loads(list_objects(_preload_content=False).data)
                    for obj in listing["items"]:
                        on_event("ADDED", obj)
                    version = listing["metadata"]["resourceVersion"]
                stream = list_objects(watch=True, resource_version=version, timeout_seconds=60,
                                      _preload_content=False)
                for line in stream:
                    if self._stop.is_set():
                        return
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        version = None  # too old: list again
                        break
                    version = event["object"]["metadata"]["resourceVersion"]
                    on_event(event["type"], event["object"])
            except Exception as err:  # keep playing the node; the benchmark reports errors
                self.errors.append(f"watch: {err!r}")
                version = None
                time.sleep(0.5)

    def _on_trial(self, kind: str, trial: dict) -> None:
        status = trial.get("status") or {}
        decided, until = status.get("decidedEpoch"), status.get("until")
        if kind == "DELETED" or not isinstance(decided, int) or not isinstance(until, int):
            return
        key = (trial["metadata"]["namespace"], trial["metadata"]["name"])
        with self._lock:
            if self.decisions.get(key, (0, 0))[0] < decided:
                self.timeline.decided.setdefault((*key, decided), time.monotonic())
            self.decisions[key] = (decided, until)

    def _on_pod(self, kind: str, pod: dict) -> None:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        now = time.monotonic()
        if kind == "DELETED" or meta.get("deletionTimestamp"):
            with self._lock:
                self.timeline.deleted.setdefault(key, now)
                run = self.runs.pop(key, None)
                if run is not None:
                    run.deleted = True
            if kind != "DELETED":
                self._pool.submit(self._force_delete, key)
            return
        if key in self.timeline.created or (pod.get("status") or {}).get("phase") not in (None, "Pending"):
            return
        trainer = next(c for c in pod["spec"]["containers"] if c["name"] != "hpo-metrics")
        env = {e["name"]: e.get("value") for e in trainer.get("env") or []}
        run = PodRun(key, meta["labels"][LABEL_TRIAL], int(meta["labels"][LABEL_ATTEMPT]),
                     int(json.loads(env[contract.ENV_CONFIG])["row"]), int(env[contract.ENV_START_EPOCH]),
                     int(env[contract.ENV_UNTIL_EPOCH]))
        with self._lock:
            self.timeline.created[key] = now
            self.runs[key] = run
        self._pool.submit(self._start, run)

    # ---- timed actions ----------------------------------------------------------
    def _later(self, seconds: float, action, run: PodRun) -> None:
        with self._wake:
            heapq.heappush(self._heap, (time.monotonic() + seconds, next(self._seq), action, run))
            self._wake.notify()

    def _dispatch(self) -> None:
        with self._wake:
            while not self._stop.is_set():
                if not self._heap:
                    self._wake.wait(1.0)
                    continue
                due = self._heap[0][0] - time.monotonic()
                if due > 0:
                    self._wake.wait(due)
                    continue
                _, _, action, run = heapq.heappop(self._heap)
                self._pool.submit(self._guarded, action, run)

    def _guarded(self, action, run: PodRun) -> None:
        if run.deleted:
            return
        try:
            action(run)
        except Exception as err:
            self.errors.append(f"{run.key}: {err!r}")

    def _start(self, run: PodRun) -> None:
        self._guarded(lambda r: self._set_phase(r.key, {"phase": "Running"}), run)
        self._later(self.epoch_seconds(run.key[0]), self._epoch, run)

    def _epoch(self, run: PodRun) -> None:
        run.epoch += 1
        ns, pod = run.key
        value = self.curves[run.row][run.epoch - 1]
        record = MetricRecord(epoch=run.epoch, objective="val_error", value=value)
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, ns, "hpotrials", run.trial, observation_patch(record, run.attempt),
                _content_type=JSON_PATCH, _preload_content=False).data  # read to the end: reuses the connection
        except ApiException as err:
            if err.status == 404:
                return  # the experiment was deleted
            raise
        self.timeline.written[(ns, pod, run.epoch)] = time.monotonic()
        if run.epoch < run.until:
            self._later(self.epoch_seconds(ns), self._epoch, run)
            return
        run.waiting_since = time.monotonic()
        self._await_decision(run)

    def _await_decision(self, run: PodRun) -> None:
        """At ``until``: continue if the operator promoted the trial in place, else end (as the SDK does)."""
        decided, until = self.decisions.get((run.key[0], run.trial), (0, 0))
        if decided >= run.epoch and until > run.epoch:
            run.until = until
            self._later(self.epoch_seconds(run.key[0]), self._epoch, run)
            return
        if decided < run.epoch and time.monotonic() - run.waiting_since < contract.DEFAULT_DECISION_TIMEOUT:
            self._later(0.05, self._await_decision, run)
            return
        terminated = {"exitCode": 0, "reason": "Completed"}
        self._set_phase(run.key, {"phase": "Succeeded", "containerStatuses": [
            {"name": "trainer", "ready": False, "restartCount": 0, "image": "trainer", "imageID": "",
             "state": {"terminated": terminated}}]})
        self.timeline.done[run.key] = time.monotonic()
        with self._lock:
            self.runs.pop(run.key, None)

    def _set_phase(self, key: PodKey, status: dict) -> None:
        try:
            self.core.patch_namespaced_pod_status(key[1], key[0], {"status": status}, _preload_content=False).data
        except ApiException as err:
            if err.status != 404:
                raise

    def _force_delete(self, key: PodKey) -> None:
        try:
            self.core.delete_namespaced_pod(key[1], key[0], grace_period_seconds=0, _preload_content=False).data
        except ApiException as err:
            if err.status != 404:
                self.errors.append(f"delete {key}: {err!r}")


def decision_latencies(timeline: Timeline, namespace: str) -> list[float]:
    """Seconds from a rung epoch's observation written to the operator's decision on it seen by a watch
    (what a trainer waiting at the rung waits for)."""
    written = {(ns, pod.rsplit("-", 1)[0], epoch): t for (ns, pod, epoch), t in timeline.written.items()}
    return [seen - written[key] for key, seen in timeline.decided.items()
            if key[0] == namespace and key in written and seen >= written[key]]


def pod_latencies(timeline: Timeline, trials: list[dict]) -> list[float]:
    """Seconds from the write that made a pod's end due to the operator deleting the pod, per finished run.

    A run either completed (trigger: the pod marked Succeeded) or was stopped by
    the scheduler (trigger: the last observation written before the deletion).
    """
    written_by_pod: dict[PodKey, list[float]] = {}
    for (ns, pod, _), t in timeline.written.items():
        written_by_pod.setdefault((ns, pod), []).append(t)
    out = []
    for trial in trials:
        ns, name = trial["metadata"]["namespace"], trial["metadata"]["name"]
        for attempt in range(1, int((trial.get("status") or {}).get("attempts", 0)) + 1):
            key = (ns, f"{name}-{attempt}")
            deleted = timeline.deleted.get(key)
            if deleted is None:
                continue
            done = timeline.done.get(key)
            if done is not None and done <= deleted:
                trigger: Optional[float] = done
            else:
                trigger = max((t for t in written_by_pod.get(key, []) if t <= deleted), default=None)
            if trigger is not None:
                out.append(deleted - trigger)
    return out
