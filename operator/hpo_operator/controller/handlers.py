"""kopf handlers: a table of contents. The work is in ``runner`` (one step), ``reconcile`` (pure decisions)
and ``kube`` (API calls).

    kopf run --standalone --all-namespaces -m hpo_operator.controller.handlers

Each running experiment has a loop (a task started from its watch events) that
runs a step when the watch caches (kopf indexes of the experiment's trials and
pods) see something of it change, and at least every HPO_RECONCILE_INTERVAL
seconds. Reads come from the caches, so a step costs what changed, not how many
trials exist. No finalizer: a deleted experiment's loop is cancelled, and the
garbage collector removes its trials, claims and pods, operator or not.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import os

import kopf

from hpo_operator.controller import kube
from hpo_operator.controller.builders import LABEL_EXPERIMENT
from hpo_operator.controller.pods import compact_pod
from hpo_operator.controller.runner import FINISHED, ExperimentRunner

GROUP, VERSION, PLURAL = "hpo.dev", "v1alpha1", "hpoexperiments"
INTERVAL = float(os.environ.get("HPO_RECONCILE_INTERVAL", "5"))
# After a wake-up, wait this long for related changes (a run's last observation and its pod ending arrive
# on two watches) so one step handles them together.
BATCH_SECONDS = float(os.environ.get("HPO_RECONCILE_BATCH", "0.05"))
OURS = {LABEL_EXPERIMENT: kopf.PRESENT}

_wakeups: dict[tuple[str, str], tuple[asyncio.AbstractEventLoop, asyncio.Event]] = {}


class NoDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf builds a diff base of every object on every event it receives, a deep copy of the whole object,
    observations included, for change handlers to compare with. The operator has none (experiments, trials
    and pods are watched for the indexes and the experiment loops alone): nothing is built (a sixth of the
    operator's CPU at 1,000 trials)."""

    def build(self, *, body, extra_fields=None):
        return {}


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    # Status has a schema: keep kopf's own bookkeeping in annotations under our prefix.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="hpo.dev")
    settings.persistence.diffbase_storage = NoDiffBaseStorage(prefix="hpo.dev")
    settings.posting.level = int(os.environ.get("HPO_EVENT_LEVEL", "30"))  # info lines: the log only
    settings.watching.server_timeout = int(os.environ.get("HPO_WATCH_TIMEOUT", "300"))
    # One namespace (the chart's watchNamespace sets HPO_NAMESPACE): its Role grants no cluster-wide reads of
    # namespaces and CRDs, so kopf must not scan for them (it retried for a minute at start, then kept failing);
    # it serves the namespace it is given and the resources found at start (waited for below).
    settings.scanning.disabled = bool(os.environ.get("HPO_NAMESPACE"))


@kopf.on.startup()
async def wait_until_resources_served(logger, **_):
    """kopf looks up the resources it watches once, right after the startup handlers; one not served then
    (the CRDs not installed yet, or an API server still starting) would never be watched. Wait for them."""
    loop = asyncio.get_running_loop()
    api = kube.Api.from_environment()
    waited = 0.0
    while missing := await loop.run_in_executor(None, api.unserved_resources):
        if waited % 30 == 0:
            logger.warning(f"Waiting for the API server to serve {', '.join(missing)} "
                           f"(install the CRDs: kubectl apply -f crds/)")
        await asyncio.sleep(1)
        waited += 1


@kopf.index(GROUP, VERSION, "hpotrials", labels=OURS)
def trial_reports(namespace, name, labels, status, **_):
    """(namespace, experiment) -> (trial, ((epoch, value), ...), (problem, ...)): what the sidecars reported."""
    status = status or {}
    observations = tuple((int(o["epoch"]), o.get("value")) for o in status.get("observations") or [])
    wake(namespace, labels[LABEL_EXPERIMENT])
    return {(namespace, labels[LABEL_EXPERIMENT]): (name, observations, tuple(status.get("problems") or ()))}


@kopf.index("pods", labels=OURS)
def trial_pods(namespace, name, labels, body, **_):
    """(namespace, experiment) -> (pod, its phase and exit codes)."""
    wake(namespace, labels[LABEL_EXPERIMENT])
    return {(namespace, labels[LABEL_EXPERIMENT]): (name, compact_pod(body))}


def wake(namespace: str, experiment: str) -> None:
    """Tell the experiment's loop something changed (it waits BATCH_SECONDS, by then the index holds it).
    Called from the index functions: kopf calls them on every change, and logs nothing per call."""
    waiting = _wakeups.get((namespace, experiment))
    if waiting is not None:
        loop, wakeup = waiting
        loop.call_soon_threadsafe(wakeup.set)


# Each running experiment's loop: a task of the operator's own, started and ended from the experiments'
# watch events. Not a kopf daemon: kopf puts a finalizer on every object that has one, and an experiment
# deleted after the operator was uninstalled would then hang on it with nothing left to remove it.
_runs: dict[tuple[str, str], asyncio.Task] = {}
_latest: dict[tuple[str, str], dict] = {}  # each experiment's body as last seen
_finished: set[tuple[str, str]] = set()  # ended here: a watch event still showing it Running starts nothing
OLD_FINALIZER = "hpo.dev/finalizer"  # what earlier versions (kopf daemons) put on experiments: removed on sight


@kopf.on.event(GROUP, VERSION, PLURAL)
async def experiment_event(type, body, meta, name, namespace, patch, logger, trial_reports: kopf.Index,
                     trial_pods: kopf.Index, **_):
    """Start an experiment's loop when a running one is seen, end it when the experiment is deleted.
    (async: kopf runs a sync handler in a thread, where the loop's tasks cannot be started.)"""
    key = (namespace, name)
    if type == "DELETED":
        _latest.pop(key, None)
        _finished.discard(key)
        if key in _runs:
            _runs.pop(key).cancel()
        return
    if OLD_FINALIZER in (meta.get("finalizers") or []):
        patch.metadata["finalizers"] = [f for f in meta["finalizers"] if f != OLD_FINALIZER]
    _latest[key] = copy.deepcopy(dict(body))
    if key in _runs or key in _finished or (body.get("status") or {}).get("phase") in FINISHED:
        wake(namespace, name)
        return
    _runs[key] = asyncio.get_running_loop().create_task(
        run_experiment(key, logger, trial_reports, trial_pods), name=f"experiment {namespace}/{name}")


@kopf.on.cleanup()
async def stop_experiment_loops(**_):
    for task in list(_runs.values()):
        task.cancel()
    await asyncio.gather(*_runs.values(), return_exceptions=True)


async def run_experiment(key: tuple[str, str], logger, trial_reports: kopf.Index, trial_pods: kopf.Index):
    """Validate, then one step after another until the experiment has finished."""
    namespace, name = key
    loop = asyncio.get_running_loop()
    wakeup = asyncio.Event()
    _wakeups[key] = (loop, wakeup)
    runner = ExperimentRunner(kube.Api.from_environment(), namespace, name, wake=lambda: wake(namespace, name))
    try:
        while True:
            wakeup.clear()
            # Snapshots taken in the event loop, where kopf updates the indexes: consistent.
            snapshot = copy.deepcopy(_latest[key])
            reports = list(trial_reports.get(key, ()))
            observations = {trial: obs for trial, obs, _ in reports}
            problems = {trial: found for trial, _, found in reports if found}
            pods = dict(trial_pods.get(key, ()))
            try:
                finished = await loop.run_in_executor(None, contextvars.copy_context().run, runner.step,
                                                      snapshot, observations, problems, pods, logger)
            except Exception as err:  # API outages, conflicts: the next step starts from a fresh read
                logger.warning(f"Reconcile step failed, retrying: {err!r}")
                finished = False
                await asyncio.sleep(1)
            if finished:
                _finished.add(key)
                return
            if runner.more_launches and not runner.follow_up_in_flight:
                await asyncio.sleep(BATCH_SECONDS)  # free slots are left: the next step at once
                continue
            # (a follow-up in flight wakes the loop when it ends: free slots are filled then)
            try:
                await asyncio.wait_for(wakeup.wait(), timeout=INTERVAL)
                await asyncio.sleep(BATCH_SECONDS)
            except asyncio.TimeoutError:
                pass
    finally:
        _wakeups.pop(key, None)
        if _runs.get(key) is asyncio.current_task():
            del _runs[key]
