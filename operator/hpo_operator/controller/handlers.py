"""kopf handlers: a table of contents. The work is in ``owner`` (one task per experiment, which alone
keeps its state), ``reconcile`` (pure decisions), ``actions`` (a plan's API calls, in order) and ``kube``
(the API client).

    kopf run --standalone --all-namespaces -m hpo_operator.controller.handlers

Each running experiment has an owner (a task started from its watch events)
that runs a step when the watch caches (kopf indexes of the experiment's trials
and pods) see something of it change, and at least every HPO_RECONCILE_INTERVAL
seconds. Reads come from the caches, so a step costs what changed, not how many
trials exist. No finalizer: a deleted experiment's loop is cancelled, and the
garbage collector removes its trials, claims and pods, operator or not.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os

import kopf

from hpo_operator.controller import metrics
from hpo_operator.controller.builders import LABEL_EXPERIMENT
from hpo_operator.controller.kube import KubeApi
from hpo_operator.controller.owner import ExperimentOwner, Seen
from hpo_operator.controller.pods import compact_pod
from hpo_operator.controller.trials import observations_of
from hpo_operator.resources import EXPERIMENT_PLURAL, FINISHED_EXPERIMENT_PHASES, GROUP, TRIAL_PLURAL, VERSION

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


class QuietEventHandler(logging.Filter):
    """kopf logs "Handler 'experiment_event' succeeded." at INFO for every watch event of every experiment:
    the log's most frequent line, saying nothing. Its failures are still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and record.getMessage() == "Handler 'experiment_event' succeeded.")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    logging.getLogger("kopf.objects").addFilter(QuietEventHandler())
    # Status has a schema: keep kopf's own bookkeeping in annotations under our prefix.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBaseStorage(prefix=GROUP)
    settings.posting.level = int(os.environ.get("HPO_EVENT_LEVEL", "30"))  # info lines: the log only
    settings.watching.server_timeout = int(os.environ.get("HPO_WATCH_TIMEOUT", "300"))
    # kopf serves the namespaces it is given and the resources found at start (waited for below), and does
    # not scan for CRDs and namespaces as they change: its rescan missed a re-installed CRD for good, and it
    # needs cluster-wide reads of CRDs the operator has no other use for. A watched resource gone unserved
    # (an API server restarting, the CRDs re-installed) ends kopf, and the entry point (__main__) starts the
    # operator afresh, which waits for them here.
    settings.scanning.disabled = True


@kopf.on.startup()
def serve_metrics(logger, **_):
    """Prometheus metrics on HPO_METRICS_PORT (``metrics.py``); a bad or taken port stops the operator."""
    try:
        port = metrics.port_from_environment()
        if port:
            metrics.serve(port)
    except (ValueError, OSError) as err:
        raise kopf.PermanentError(str(err)) from err
    logger.info(f"Serving metrics at :{port}/metrics" if port else "Serving no metrics (HPO_METRICS_PORT=0)")


@kopf.on.startup()
async def wait_until_resources_served(logger, **_):
    """kopf looks up the resources it watches once, right after the startup handlers; one not served then
    (the CRDs not installed yet, or an API server still starting) would never be watched. Wait for them."""
    loop = asyncio.get_running_loop()
    api = KubeApi.from_environment()
    waited = 0.0
    while missing := await loop.run_in_executor(None, api.unserved_resources):
        if waited % 30 == 0:
            logger.warning(f"Waiting for the API server to serve {', '.join(missing)} "
                           f"(install the CRDs: kubectl apply -f crds/)")
        await asyncio.sleep(1)
        waited += 1


@kopf.index(GROUP, VERSION, TRIAL_PLURAL, labels=OURS)
def trial_reports(namespace, name, labels, status, **_):
    """(namespace, experiment) -> (trial, ((epoch, value, seconds), ...), (problem, ...)): what the sidecars
    reported (seconds: how long the epoch took, where its record tells; see ``trials.observations_of``)."""
    status = status or {}
    observations = tuple(observations_of({"status": status}))
    metrics.ARRIVALS.note((namespace, labels[LABEL_EXPERIMENT]), name, len(observations))
    wake(namespace, labels[LABEL_EXPERIMENT])
    return {(namespace, labels[LABEL_EXPERIMENT]): (name, observations, tuple(status.get("problems") or ()))}


@kopf.index("pods", labels=OURS)
def trial_pods(namespace, name, labels, body, **_):
    """(namespace, experiment) -> (pod, its phase and exit codes)."""
    wake(namespace, labels[LABEL_EXPERIMENT])
    return {(namespace, labels[LABEL_EXPERIMENT]): (name, compact_pod(body))}


def wake(namespace: str, experiment: str) -> None:
    """Tell the experiment's owner something changed (it waits BATCH_SECONDS, by then the index holds it).
    Called from the index functions: kopf calls them on every change, and logs nothing per call."""
    waiting = _wakeups.get((namespace, experiment))
    if waiting is not None:
        loop, wakeup = waiting
        loop.call_soon_threadsafe(wakeup.set)


# Each running experiment's owner: a task of the operator's own, started and ended from the experiments'
# watch events. Not a kopf daemon: kopf puts a finalizer on every object that has one, and an experiment
# deleted after the operator was uninstalled would then hang on it with nothing left to remove it.
_runs: dict[tuple[str, str], asyncio.Task] = {}
_latest: dict[tuple[str, str], dict] = {}  # each experiment's body as last seen
_finished: set[tuple[str, str]] = set()  # ended here: a watch event still showing it Running starts nothing
OLD_FINALIZER = f"{GROUP}/finalizer"  # what earlier versions (kopf daemons) put on experiments: removed on sight


@kopf.on.event(GROUP, VERSION, EXPERIMENT_PLURAL)
async def experiment_event(type, body, meta, name, namespace, patch, logger, trial_reports: kopf.Index,
                     trial_pods: kopf.Index, **_):
    """Start an experiment's owner when a running one is seen, end it when the experiment is deleted.
    (async: kopf runs a sync handler in a thread, where no task can be started.)"""
    key = (namespace, name)
    if type == "DELETED":
        _latest.pop(key, None)
        _finished.discard(key)
        if key in _runs:
            _runs.pop(key).cancel()
        metrics.forget(namespace, name)
        return
    if OLD_FINALIZER in (meta.get("finalizers") or []):
        patch.metadata["finalizers"] = [f for f in meta["finalizers"] if f != OLD_FINALIZER]
    _latest[key] = copy.deepcopy(dict(body))
    if key in _runs or key in _finished or (body.get("status") or {}).get("phase") in FINISHED_EXPERIMENT_PHASES:
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
    """The experiment's owner, fed snapshots of the caches, until the experiment has finished."""
    namespace, name = key
    wakeup = asyncio.Event()
    _wakeups[key] = (asyncio.get_running_loop(), wakeup)

    def seen() -> Seen:
        # Taken in the event loop, where kopf updates the indexes: consistent.
        reports = list(trial_reports.get(key, ()))
        return Seen(copy.deepcopy(_latest[key]), {trial: obs for trial, obs, _ in reports},
                    {trial: list(found) for trial, _, found in reports if found}, dict(trial_pods.get(key, ())))

    try:
        await ExperimentOwner(KubeApi.from_environment(), namespace, name, logger).run(seen, wakeup, INTERVAL,
                                                                                       BATCH_SECONDS)
        _finished.add(key)
    finally:
        _wakeups.pop(key, None)
        if _runs.get(key) is asyncio.current_task():
            del _runs[key]
