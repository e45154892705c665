"""The operator's Prometheus metrics: what each experiment's owner decided and did, and what it cost.

Definitions, and the few helpers that feed them, all here: the owner counts a
step from what ``reconcile.step`` returned (its ``Plan``: decisions, launches,
run ends) through its ``ExperimentMeter``; the API client counts each request
(``count_requests``, wrapped around the client's REST layer in ``kube.py``);
the kopf startup handler serves them (``serve``: ``HPO_METRICS_PORT``, default
8000, 0 serves none) and a deleted experiment's series go with it (``forget``).
docs/operator.md lists every metric.

Per-experiment series carry ``namespace`` and ``experiment``; the histograms
and the API counts are operator-wide, so their number does not grow with the
experiments. The owner keeps its experiment's label children (a dict lookup
under a lock each time otherwise): a step costs a handful of increments.
"""

from __future__ import annotations

import math
import os
import threading
import time
from bisect import bisect_left
from collections import Counter as Counter_
from itertools import accumulate
from typing import Callable, Iterable, Optional

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from hpo_operator.resources import TrialPhase

PORT_VARIABLE = "HPO_METRICS_PORT"
DEFAULT_PORT = 8000  # (the chart's liveness endpoint has 8080)

EXPERIMENT = ["namespace", "experiment"]
PHASES = tuple(phase.value for phase in TrialPhase)
DECISION_KINDS = ("continue", "pause", "stop", "promote")
LAUNCH_REASONS = ("new", "resume", "retry")
RUN_OUTCOMES = ("completed", "paused", "retried", "failed", "stopped", "unstarted")


class BatchHistogram:
    """A histogram fed all of a step's samples under one lock, exposed as the library's histograms are. The
    library's ``Histogram.observe`` takes two locks per sample, which in a step acting on 1,000 observations
    was most of what the metrics cost (bench/metrics_cost.py)."""

    def __init__(self, name: str, documentation: str, buckets: Iterable[float], registry=REGISTRY):
        self.name, self.documentation = name, documentation
        self.bounds = [float(b) for b in buckets] + [math.inf]
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        self.lock = threading.Lock()
        registry.register(self)

    def observe_all(self, values: Iterable[float]) -> None:
        with self.lock:
            for value in values:
                self.counts[bisect_left(self.bounds, value)] += 1  # (the first bucket whose bound is >= value)
                self.total += value

    def collect(self):
        with self.lock:
            counts, total = list(self.counts), self.total
        yield HistogramMetricFamily(self.name, self.documentation, sum_value=total,
                                    buckets=[(floatToGoString(b), c) for b, c in zip(self.bounds, accumulate(counts))])


TRIALS = Gauge("hpo_trials", "Trials of an experiment by phase, as the operator records them on its HPOTrials "
               "(set after each step that wrote a trial's status).", EXPERIMENT + ["phase"])
OBSERVATIONS = Counter("hpo_observations_ingested", "Observations (epochs a trial's sidecar recorded) the "
                       "operator fed to the scheduler.", EXPERIMENT)
DECISIONS = Counter("hpo_decisions", "The scheduler's decision on each observation: continue, pause (at a rung), "
                    "stop, or promote (in place: the run goes on past its rung).", EXPERIMENT + ["kind"])
LAUNCHES = Counter("hpo_launches", "Runs launched (a pod each): new trials, resumed paused trials, retries.",
                   EXPERIMENT + ["reason"])
RUN_ENDS = Counter("hpo_run_ends", "Runs ended, by outcome: completed, paused (at its rung), retried, failed, "
                   "stopped (by the scheduler or the budget), unstarted (its pod never came: launched again).",
                   EXPERIMENT + ["outcome"])
DECISION_LATENCY = BatchHistogram(
    "hpo_decision_latency_seconds", "From the watch event that first showed the operator a trial's observation "
    "to the end of the write of the decisions of the step that acted on it (one sample per trial and step: the "
    "earliest observation it acted on).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
STEP_SECONDS = Histogram("hpo_step_duration_seconds", "Steps of experiment owners, read to decisions written "
                         "(the count is the number of steps).",
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
STEP_RETRIES = Counter("hpo_step_retries", "Steps that failed (an API error or outage) and were retried from a "
                       "fresh read of the API a second later.")
REBUILDS = Counter("hpo_state_rebuilds", "Experiment states built from a fresh list of trials and pods: at the "
                   "owner's start, after a spec change, or in recovery after calls failed half-way.", ["reason"])
API_REQUESTS = Counter("hpo_api_requests", "Requests of the operator's API client (the owners' reads and writes, "
                       "not kopf's watches and events), by verb, resource and HTTP status code ('error': no answer).",
                       ["verb", "resource", "code"])

PER_EXPERIMENT = ((TRIALS, PHASES), (OBSERVATIONS, None), (DECISIONS, DECISION_KINDS), (LAUNCHES, LAUNCH_REASONS),
                  (RUN_ENDS, RUN_OUTCOMES))


def port_from_environment() -> int:
    raw = os.environ.get(PORT_VARIABLE, str(DEFAULT_PORT))
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ValueError(f"{PORT_VARIABLE}={raw!r} is not a port: give a number from 1 to 65535, or 0 to serve "
                         f"no metrics")
    return port


def serve(port: int) -> None:
    """Serve /metrics on every address, in a thread of its own; a port taken says which variable to change."""
    try:
        start_http_server(port)
    except OSError as err:
        raise OSError(f"cannot serve metrics on port {port} ({err.strerror}): set {PORT_VARIABLE} to a free port, "
                      f"or to 0 to serve no metrics") from err


def forget(namespace: str, experiment: str) -> None:
    """Drop a deleted experiment's series (labels of a closed set: each possible one is removed)."""
    for metric, values in PER_EXPERIMENT:
        for value in values or [None]:
            try:
                metric.remove(namespace, experiment, *([value] if value else []))
            except KeyError:
                pass
    ARRIVALS.forget((namespace, experiment))


class Arrivals:
    """When each observation reached the operator: the watch event that first showed its trial's record
    holding it (``note``, from the trials' index function), kept until a step has acted on it (``acted``),
    for the decision latency. Tied to the observation's number, not to a snapshot of the caches: an event
    the index function saw before the owner read the index, but stored after, still counts. Watch events
    come from kopf's threads, the owner reads in the event loop: a lock, taken when a record grew."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._counts: dict[tuple[str, str], dict[str, int]] = {}  # (namespace, experiment) -> trial -> records
        # ... -> trial -> [(records on file, when first seen)], oldest first, those not yet acted on
        self._seen: dict[tuple[str, str], dict[str, list[tuple[int, float]]]] = {}
        self._lock = threading.Lock()

    def note(self, key: tuple[str, str], trial: str, observations: int) -> None:
        counts = self._counts.setdefault(key, {})
        if observations > counts.get(trial, 0):
            with self._lock:
                self._seen.setdefault(key, {}).setdefault(trial, []).append((observations, self.clock()))
        counts[trial] = observations

    def waiting(self, key: tuple[str, str]) -> list[str]:
        """The trials with observations seen that no step has acted on yet."""
        with self._lock:
            return list(self._seen.get(key, ()))

    def acted(self, key: tuple[str, str], ranges: dict[str, tuple[int, int]]) -> list[float]:
        """A step acted on each trial's observations ``before``+1 .. ``after`` (``ranges``: trial -> (before,
        after)): when the first of each trial's was seen (none for a trial no event showed them for); they
        are forgotten."""
        firsts = []
        with self._lock:
            trials = self._seen.get(key, {})
            for trial, (before, after) in ranges.items():
                seen = trials.get(trial)
                if not seen:
                    continue
                for count, at in seen:
                    if count > before:
                        firsts.append(at)
                        break
                if seen[-1][0] <= after:
                    del trials[trial]
                elif seen[0][0] <= after:
                    trials[trial] = [entry for entry in seen if entry[0] > after]
        return firsts

    def forget(self, key: tuple[str, str]) -> None:
        self._counts.pop(key, None)
        with self._lock:
            self._seen.pop(key, None)


ARRIVALS = Arrivals()


class ExperimentMeter:
    """One experiment's series, fed by its owner."""

    def __init__(self, namespace: str, experiment: str):
        self.key = labels = (namespace, experiment)
        self.trials = {p: TRIALS.labels(*labels, p) for p in PHASES}
        self.observations = OBSERVATIONS.labels(*labels)
        self.decisions = {k: DECISIONS.labels(*labels, k) for k in DECISION_KINDS}
        self.launches = {r: LAUNCHES.labels(*labels, r) for r in LAUNCH_REASONS}
        self.run_ends = {o: RUN_ENDS.labels(*labels, o) for o in RUN_OUTCOMES}
        self.built = False

    def rebuilt(self, previous_state: Optional[object]) -> None:
        reason = "spec_changed" if previous_state is not None else "recovery" if self.built else "start"
        self.built = True
        REBUILDS.labels(reason).inc()

    def processed(self, state) -> dict[str, int]:
        """Before a step: the observations acted on so far of each trial with observations waiting."""
        return {trial: state.books[trial].processed for trial in ARRIVALS.waiting(self.key) if trial in state.books}

    def decided(self, plan, state, processed_before: dict[str, int], recount: bool = False) -> list[float]:
        """A step has decided: count its decisions; returns when the observations it acted on were first seen
        (``processed_before``: ``processed`` of each trial before the step), for ``written``. Trials are
        counted again when the step writes any trial's status (every change of phase is such a write) or
        ``recount`` (a rebuilt state)."""
        if plan.trial_status or recount:
            self.count_trials(state)
        for kind, n in plan.decisions.items():
            self.decisions[kind].inc(n)
        if plan.decisions:
            self.observations.inc(sum(plan.decisions.values()))
        for outcome, n in plan.run_ends.items():
            self.run_ends[outcome].inc(n)
        for launch in plan.launches:
            self.launches[launch.reason].inc()
        books = state.books
        acted = {trial: (before, books[trial].processed) for trial, before in processed_before.items()
                 if trial in books and books[trial].processed > before}
        return ARRIVALS.acted(self.key, acted) if acted else []

    @staticmethod
    def written(arrivals: list[float]) -> None:
        """The decisions on observations first seen at ``arrivals`` are on record: their latency."""
        if arrivals:
            now = time.monotonic()
            DECISION_LATENCY.observe_all([now - seen for seen in arrivals])

    def count_trials(self, state) -> None:
        """Trials by the phase on record: what the operator wrote last (or read, after a rebuild) in each
        trial's status; a trial with none yet by the phase it will get (``settled_phase``)."""
        engine = state.engine
        counts = Counter_(book.written.get("phase") or engine.settled_phase(book.trial_id) for book in state.books.values())
        for phase in PHASES:
            self.trials[phase].set(counts.get(phase, 0))


# ---- API requests ---------------------------------------------------------------------------------------
def verb_and_resource(method: str, url: str) -> tuple[str, str]:
    """Kubernetes' verb and resource of a request: ('list', 'pods'), ('patch', 'hpotrials/status'), ...
    from its method and URL path (/api/v1/namespaces/NS/pods, /apis/GROUP/VERSION/namespaces/NS/R/NAME/SUB)."""
    path = url.split("://", 1)[-1].split("?", 1)[0]
    parts = path.split("/")[1:]  # (the host goes)
    # (after a proxy's prefix, if any) /api/VERSION/... or /apis/GROUP/VERSION/...
    start = next((i + {"api": 2, "apis": 3}[p] for i, p in enumerate(parts) if p in ("api", "apis")), None)
    if start is None:
        return method.lower(), "other"
    rest = parts[start:]
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) != 2:
        rest = rest[2:]  # namespaced (a namespace itself is /namespaces/NAME)
    if not rest or not rest[0]:
        return "get", "discovery"
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    named = len(rest) > 1
    verb = {"GET": "get" if named else "list", "POST": "create", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete" if named else "deletecollection"}.get(method.upper(), method.lower())
    return verb, resource


def count_requests(request: Callable) -> Callable:
    """``request`` (the Kubernetes client's ``RESTClientObject.request(method, url, ...)``), counting each call
    in ``hpo_api_requests_total``. Newer clients return a non-2xx answer, older ones raise it."""
    def counted(method, url, *args, **kwargs):
        code = "error"
        try:
            response = request(method, url, *args, **kwargs)
            code = str(getattr(response, "status", "") or "error")
            return response
        except Exception as err:
            status = getattr(err, "status", None)
            code = str(status) if status else "error"
            raise
        finally:
            API_REQUESTS.labels(*verb_and_resource(method, url), code).inc()
    return counted
