"""The operator's API calls, and the execution of a reconcile plan in a crash-safe order.

The order of a step's calls is in ``execute`` (``apply_decisions``, then
``deletions`` and ``follow_up``): a trial's status records why its pod goes
before the pod is deleted; a trial and its claim are created, and its status
records the run, before its pod (names are deterministic, so a repeat after a
crash gets 409 and changes nothing). A crash anywhere in between replays the
decisions on the next step, from the trials as written: a pod no run uses is
deleted, and a run recorded whose pod never came is launched again as the
same attempt.

Lists are read as raw JSON: the client's typed models cost ~1 ms per pod to build.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Callable, Collection, Optional

import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from hpo_operator.controller.builders import (
    LABEL_ATTEMPT, LABEL_EXPERIMENT, LABEL_TRIAL, build_claim, build_pod, build_trial, claim_name, object_ref,
    sidecar_owner, sidecar_rbac,
)
from hpo_operator.controller.pods import compact_pod
from hpo_operator.controller.reconcile import Event, Plan, TrialBook, coalesce_events
from hpo_operator.controller.trials import has_records

GROUP, VERSION = "hpo.dev", "v1alpha1"
SIDECAR_IMAGE = os.environ.get("HPO_SIDECAR_IMAGE", "hpo-operator:0.1.0")


class TemplateRejected(Exception):
    """The API server (or its client) refused a trial pod built from spec.trialTemplate: no retry can help."""


def now() -> datetime:
    return datetime.now(timezone.utc)


def _body(response) -> bytes:
    """Read a raw response (``_preload_content=False``) to its end: only then does its connection go back
    to the pool. One left unread is dropped, and the next request pays a new TLS handshake."""
    return response.data


def _ignore(status: int):
    class _Ctx:
        def __enter__(self):
            return self

        def __exit__(self, typ, err, tb):
            return isinstance(err, ApiException) and err.status == status
    return _Ctx()


# API calls one step has in flight at once (a wave's calls run in parallel, this many at a time).
API_CONCURRENCY = int(os.environ.get("HPO_API_CONCURRENCY", "16"))


class Api:
    _instance = None

    def __init__(self, api_client: client.ApiClient):
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.rbac = client.RbacAuthorizationV1Api(api_client)
        self.storage = client.StorageV1Api(api_client)
        self._binds_at_once: dict[Optional[str], bool] = {}
        self._sidecar_ready: set[str] = set()  # uids of the experiments whose sidecar identity is in place

    @classmethod
    def from_environment(cls) -> "Api":
        if cls._instance is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            configuration = client.Configuration.get_default_copy()
            configuration.connection_pool_maxsize = 3 * API_CONCURRENCY  # decisions and fences, launches, deletions
            cls._instance = cls(client.ApiClient(configuration))
        return cls._instance

    def unserved_resources(self) -> list[str]:
        """Of the resources the operator watches, those the API server does not serve yet (its discovery
        documents). A restarted API server answers requests before it lists the CRDs' resources, and kopf,
        which scans them once at start, would then never watch them."""
        served: set[str] = set()
        for ask in (self.core.get_api_resources,
                    lambda **kw: self.custom.get_api_resources(GROUP, VERSION, **kw)):
            try:
                served |= {r["name"] for r in json.loads(ask(_preload_content=False).data)["resources"]}
            except Exception:  # not answering, or the group is not listed yet: its resources are missing
                pass
        return [name for name in ("pods", "hpoexperiments", "hpotrials") if name not in served]

    def list_trials(self, namespace: str, experiment: str) -> list[dict]:
        out = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "hpotrials",
                                                        label_selector=f"{LABEL_EXPERIMENT}={experiment}",
                                                        _preload_content=False)
        return json.loads(out.data)["items"]

    def get_trials(self, namespace: str, names: list[str]) -> list[dict]:
        """The named trials, read from the API server (not a cache), in parallel."""
        def get(name: str) -> dict:
            return json.loads(self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "hpotrials", name,
                                                                       _preload_content=False).data)
        return list(_POOL.map(get, names))

    def fence_trials(self, namespace: str, fences: dict[str, int]) -> list[dict]:
        """Set each named trial's ``status.runFence``, in parallel; the trials as that write left them."""
        def fence(name: str) -> dict:
            return json.loads(self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, "hpotrials", name, {"status": {"runFence": fences[name]}},
                _preload_content=False).data)
        return list(_POOL.map(fence, fences))

    def list_pods(self, namespace: str, experiment: str) -> dict[str, dict]:
        """The experiment's pods, name -> ``compact_pod``."""
        out = self.core.list_namespaced_pod(namespace, label_selector=f"{LABEL_EXPERIMENT}={experiment}",
                                            _preload_content=False)
        return {p["metadata"]["name"]: compact_pod(p) for p in json.loads(out.data)["items"]}

    def ensure_sidecar_identity(self, experiment: dict) -> None:
        """The sidecar's ServiceAccount, Role and RoleBinding in the experiment's namespace, each owned by
        every experiment that used them (``sidecar_owner``): they go with the last of them, operator or not."""
        uid = experiment["metadata"]["uid"]
        if uid in self._sidecar_ready:
            return
        owner = sidecar_owner(experiment)
        namespace = experiment["metadata"]["namespace"]
        kinds = {"ServiceAccount": (self.core.create_namespaced_service_account,
                                    self.core.read_namespaced_service_account,
                                    self.core.patch_namespaced_service_account),
                 "Role": (self.rbac.create_namespaced_role, self.rbac.read_namespaced_role,
                          self.rbac.patch_namespaced_role),
                 "RoleBinding": (self.rbac.create_namespaced_role_binding, self.rbac.read_namespaced_role_binding,
                                 self.rbac.patch_namespaced_role_binding)}
        for obj in sidecar_rbac(namespace, owner):
            create, read, patch = kinds[obj["kind"]]
            try:
                create(namespace, obj)
                continue
            except ApiException as err:
                if err.status != 409:
                    raise
            name = obj["metadata"]["name"]
            existing = read(name, namespace, _preload_content=False)
            owners = (json.loads(existing.data)["metadata"].get("ownerReferences") or [])
            if not any(o.get("uid") == uid for o in owners):
                patch(name, namespace, {"metadata": {"ownerReferences": owners + [owner]}})
        self._sidecar_ready.add(uid)

    def binds_at_once(self, storage_class: Optional[str]) -> bool:
        """Claims of this StorageClass (None: the default one) are bound as soon as they are created, by a
        provisioner (volumeBindingMode Immediate): a pod created before that is reported unschedulable.
        False where the classes cannot be read (the operator watches one namespace) or there is none."""
        if storage_class not in self._binds_at_once:
            self._binds_at_once[storage_class] = self._read_binds_at_once(storage_class)
        return self._binds_at_once[storage_class]

    def _read_binds_at_once(self, storage_class: Optional[str]) -> bool:
        try:
            classes = json.loads(self.storage.list_storage_class(_preload_content=False).data)["items"]
        except ApiException as err:
            if err.status in (401, 403, 404):
                return False
            raise
        default = "storageclass.kubernetes.io/is-default-class"
        chosen = [c for c in classes if (c["metadata"]["name"] == storage_class if storage_class
                                         else (c["metadata"].get("annotations") or {}).get(default) == "true")]
        return bool(chosen) and chosen[0].get("volumeBindingMode", "Immediate") == "Immediate" \
            and chosen[0].get("provisioner") != "kubernetes.io/no-provisioner"

    def wait_bound(self, namespace: str, claims: Collection[str], timeout: float) -> None:
        """Wait until these claims are Bound, at most ``timeout`` seconds (a pod created after it would
        otherwise be reported unschedulable once: a FailedScheduling Warning per new trial)."""
        left = set(claims)
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            for name in sorted(left):
                claim = json.loads(self.core.read_namespaced_persistent_volume_claim(
                    name, namespace, _preload_content=False).data)
                if (claim.get("status") or {}).get("phase") == "Bound":
                    left.discard(name)
            if left:
                time.sleep(0.25)

    def create_trial(self, obj: dict) -> tuple[dict, bool]:
        """(the trial, whether this call created it)."""
        ns = obj["metadata"]["namespace"]
        try:
            return self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "hpotrials", obj), True
        except ApiException as err:
            if err.status != 409:
                raise
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "hpotrials",
                                                            obj["metadata"]["name"]), False

    def patch_trial_status(self, namespace: str, name: str, patch: dict) -> None:
        _body(self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "hpotrials", name,
                                                                {"status": patch}, _preload_content=False))

    def patch_experiment_status(self, namespace: str, name: str, status: dict) -> None:
        _body(self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "hpoexperiments", name,
                                                                {"status": status}, _preload_content=False))

    def create(self, obj: dict, dry_run: bool = False) -> None:
        ns = obj["metadata"]["namespace"]
        with _ignore(409):
            if obj["kind"] == "Pod":
                _body(self.core.create_namespaced_pod(ns, obj, _preload_content=False,
                                                      **({"dry_run": "All"} if dry_run else {})))
            else:
                _body(self.core.create_namespaced_persistent_volume_claim(ns, obj, _preload_content=False))

    def pod_deletions(self, namespace: str, experiment: str, runs: Collection[tuple[str, int]]
                      ) -> list[Callable[[], None]]:
        """The requests that delete the pods of these runs ((trial, attempt) pairs), to send in parallel: one
        deletecollection per attempt number and DELETE_CHUNK trials, selected by label, instead of one
        request per pod. The attempt is in the selector: after a crash, a trial's next pod may exist before
        its last one is deleted."""
        by_attempt: dict[int, list[str]] = {}
        for trial, attempt in runs:
            by_attempt.setdefault(attempt, []).append(trial)
        return [lambda selector=selector, attempt=attempt: _body(self.core.delete_collection_namespaced_pod(
                    namespace, label_selector=f"{selector},{LABEL_ATTEMPT}={attempt}", grace_period_seconds=10,
                    _preload_content=False))
                for attempt, trials in sorted(by_attempt.items())
                for selector in _trial_selectors(experiment, trials)]

    def delete_trial_pods(self, namespace: str, experiment: str, runs: Collection[tuple[str, int]]) -> None:
        """Delete the pods of these runs (see ``pod_deletions``), one request after another."""
        for delete in self.pod_deletions(namespace, experiment, runs):
            delete()

    def delete_trial_claims(self, namespace: str, experiment: str, trials: Collection[str]) -> None:
        """Delete these trials' checkpoint claims, DELETE_CHUNK trials per request."""
        for selector in _trial_selectors(experiment, trials):
            _body(self.core.delete_collection_namespaced_persistent_volume_claim(
                namespace, label_selector=selector, _preload_content=False))


# Trials per deletecollection request: the label selector names them all in the URL (~40 bytes each).
DELETE_CHUNK = 100


def _trial_selectors(experiment: str, trials: Collection[str]) -> list[str]:
    names = sorted(set(trials))
    return [f"{LABEL_EXPERIMENT}={experiment},{LABEL_TRIAL} in ({','.join(names[i:i + DELETE_CHUNK])})"
            for i in range(0, len(names), DELETE_CHUNK)]


def create_pod(api: Api, pod: dict, dry_run: bool = False) -> None:
    try:
        api.create(pod, dry_run=dry_run)
    except ApiException as err:
        if err.status not in (400, 422):
            raise  # quota (403), conflicts and outages are retried on the next step
        raise TemplateRejected(f"spec.trialTemplate: the API server refused trial pod {pod['metadata']['name']}: "
                               f"{_api_message(err)}; fix the template and re-apply") from err
    except ValueError as err:  # the client validates before sending (pydantic ValidationError is a ValueError)
        raise TemplateRejected(f"spec.trialTemplate: trial pod {pod['metadata']['name']} is not a valid Pod: "
                               f"{err}; fix the template and re-apply") from err


def _api_message(err: ApiException) -> str:
    try:
        return json.loads(err.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(err.reason)


def judge_template(api: Api, spec, experiment: dict, launch) -> None:
    """Let the API server judge the first trial pod (a dry run) before anything is created.

    The validator cannot know every rule of every API server version; a template the
    server refuses then fails the experiment with no trial, claim or pod left behind.
    """
    probe = build_trial(experiment, launch.trial)
    probe["metadata"]["uid"] = "00000000-0000-0000-0000-000000000000"  # not created: no uid yet
    create_pod(api, build_pod(spec, experiment, probe, launch, SIDECAR_IMAGE), dry_run=True)


def _all(calls, pool: Optional[ThreadPoolExecutor] = None) -> None:
    """Run independent API calls at once (each is a round trip; in sequence they made one step of a
    thousand-trial experiment take seconds); wait for all, then raise the first error."""
    futures = [(pool or _POOL).submit(call) for call in calls]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]


_POOL = ThreadPoolExecutor(max_workers=API_CONCURRENCY, thread_name_prefix="hpo-api")
# Launches have their own, and so do pod deletions (kube-apiserver deletes a collection one pod at a time:
# a second or two for a busy step's): neither holds up the next step's decisions, nor each other.
_FOLLOW_UP_POOL = ThreadPoolExecutor(max_workers=API_CONCURRENCY, thread_name_prefix="hpo-follow-up-api")
DELETE_POOL = ThreadPoolExecutor(max_workers=API_CONCURRENCY, thread_name_prefix="hpo-delete-api")


# How long a launch waits for its new claims to be bound before it creates their pods anyway.
CLAIM_BIND_SECONDS = 30.0

# What the sidecar appends to; runFence 0 is the value its appends test (see Api.fence_trials).
EMPTY_RECORDS = {"observations": [], "problems": [], "problemsPosted": 0, "runFence": 0}


def run_fence(book: TrialBook) -> int:
    """The trial's ``status.runFence`` as the operator last wrote or read it (0 with a new trial's records)."""
    return int(book.written.get("runFence") or 0)


def post_events(experiment: dict, refs: dict[str, Optional[dict]], events: list[Event]) -> None:
    """Post ``events`` (``coalesce_events``); ``refs``: their trials' object references."""
    for ev in coalesce_events(events):
        target = refs.get(ev.trial) if ev.trial else experiment
        if target is not None:
            kopf.event(target, type=ev.type, reason=ev.reason, message=ev.message)


# What apply_decisions and follow_up do with a plan's events: post them (the default), or hold them.
EventSink = Callable[[dict, dict[str, TrialBook], list[Event]], None]


def _post_now(experiment: dict, books: dict[str, TrialBook], events: list[Event]) -> None:
    post_events(experiment, {ev.trial: books[ev.trial].ref for ev in events if ev.trial}, events)


def execute(api: Api, plan: Plan, spec, experiment: dict, books: dict[str, TrialBook], logger) -> None:
    """Apply ``plan`` in one go: its decisions (``apply_decisions``), the pods and claims that must go
    (``deletions``), then its launches (``follow_up``). The runner sends the last two in the background."""
    apply_decisions(api, plan, experiment, books)
    _all(deletions(api, plan, experiment))
    follow_up(api, plan, spec, experiment, books, logger)


def apply_decisions(api: Api, plan: Plan, experiment: dict, books: dict[str, TrialBook],
                    events: EventSink = _post_now) -> None:
    """The status of every trial ``plan`` decided on, except those it launches: one wave of parallel calls.

    A trainer waiting at a rung has its answer after the step's first round trip, and a trial's status
    says why its pod goes (Stopped, Completed, Retrying) before the pod is deleted (``deletions``: a
    rebuild deletes any pod a crash left behind, see ``reconcile.step``). The runner sends the rest of
    the step after this, in the background: the next step's decisions may go out while it is in flight.
    """
    ns = experiment["metadata"]["namespace"]
    launched = launched_trials(plan)
    _all(lambda n=n, p=p: api.patch_trial_status(ns, n, p) for n, p in plan.trial_status.items()
         if n not in launched)
    events(experiment, books, [ev for ev in plan.events if ev.trial not in launched])


def deletions(api: Api, plan: Plan, experiment: dict) -> list[Callable[[], None]]:
    """The requests that delete the pods ``plan`` ends (``Api.pod_deletions``) and the claims it drops,
    to send after its decisions, in parallel."""
    ns, name = experiment["metadata"]["namespace"], experiment["metadata"]["name"]
    calls = api.pod_deletions(ns, name, list(plan.delete_pods.values())) if plan.delete_pods else []
    if plan.delete_claims:
        calls.append(lambda: api.delete_trial_claims(ns, name, plan.delete_claims.values()))
    return calls


def launched_trials(plan: Plan) -> set[str]:
    return {launch.trial.name for launch in plan.launches}


def follow_up(api: Api, plan: Plan, spec, experiment: dict, books: dict[str, TrialBook], logger,
              events: EventSink = _post_now) -> None:
    """The launches of ``plan``, after its decisions (``apply_decisions``), in three waves, each finished
    before the next starts; within a wave the calls run in parallel:

    1. the new trials;
    2. the launched trials' status, with a new trial's empty records for its sidecar to append to, and
       checkpoint claims (waited for until bound, where their StorageClass binds at once:
       ``Api.binds_at_once``): after the ended trials' status (no listing shows more trials Running than the
       parallelism) and before any pod (its sidecar starts from what the status says). A crash before
       the pod leaves a trial Running without one: a rebuild relaunches it as the same attempt
       (``unstarted_runs``);
    3. the pods.
    """
    ns = experiment["metadata"]["namespace"]
    if plan.launches and all(book.ref is None for book in books.values()):
        judge_template(api, spec, experiment, plan.launches[0])

    def create_trial(launch) -> None:
        trial, _ = api.create_trial(build_trial(experiment, launch.trial))
        book = books[launch.trial.name]
        book.ref, book.has_records = object_ref(trial), has_records(trial)

    _all((lambda launch=launch: create_trial(launch) for launch in plan.launches
          if books[launch.trial.name].ref is None), _FOLLOW_UP_POOL)

    def write_launched(launch) -> None:
        book = books[launch.trial.name]
        # A new trial (or one a crash cut short) gets empty records for its sidecar to append to.
        records = {} if book.has_records else EMPTY_RECORDS
        patch = {**records, **plan.trial_status.get(launch.trial.name, {})}
        if patch:  # a run launched again as the same attempt may find its status as it should be
            api.patch_trial_status(ns, launch.trial.name, patch)
        book.has_records = True

    _all([lambda launch=launch: write_launched(launch) for launch in plan.launches] +
         [lambda launch=launch: api.create(build_claim(spec, books[launch.trial.name].ref))
          for launch in plan.launches  # a later attempt's claim was created before the first attempt's pod
          if spec.checkpoints.storage == "perTrial" and launch.attempt == 1], _FOLLOW_UP_POOL)
    first_claims = [claim_name(launch.trial.name) for launch in plan.launches
                    if spec.checkpoints.storage == "perTrial" and launch.attempt == 1]
    if first_claims and api.binds_at_once(spec.checkpoints.storage_class_name):
        api.wait_bound(ns, first_claims, CLAIM_BIND_SECONDS)
    _all((lambda launch=launch: create_pod(api, build_pod(spec, experiment, books[launch.trial.name].ref, launch,
                                                          SIDECAR_IMAGE, run_fence(books[launch.trial.name])))
          for launch in plan.launches), _FOLLOW_UP_POOL)
    for launch in plan.launches:
        logger.info(f"Launched trial name={launch.trial.name} attempt={launch.attempt} reason={launch.reason} "
                    f"epochs={launch.start_epoch + 1}..{launch.until}")
    launched = launched_trials(plan)
    events(experiment, books, [ev for ev in plan.events if ev.trial in launched])
