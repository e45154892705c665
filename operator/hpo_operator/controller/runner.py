"""One experiment's reconcile loop body: read, decide (``reconcile.step``), act (``kube.apply_decisions``,
then ``kube.deletions`` and ``kube.follow_up`` in the background), report.

The handler calls :meth:`ExperimentRunner.step` whenever the watch caches saw
something of the experiment change (and on a slow tick). The runner keeps the
experiment's :class:`ExperimentState` between steps and rebuilds it from a
fresh list of trials and pods when it has none: at start, after a step (or a
follow-up) that failed half-way, and when the spec changed.

A step writes its decisions, then sends the rest in the background: its pod
deletions at once, its launches as a follow-up, one at a time. The next step
decides and writes its decisions while they are in flight, so a trainer
waiting at a rung waits neither for a wave of new pods nor for the API
server's slow, one-by-one deletion of a collection of pods.
"""

from __future__ import annotations

import contextvars
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Optional

import kopf

from hpo_operator.controller import kube, spec_changes
from hpo_operator.controller.conditions import set_condition
from hpo_operator.controller.reconcile import (
    LAUNCHES_PER_STEP, POD_PROBLEM, Event, ExperimentState, Observations, Plan, observations_of,
    pod_problem_summary, problems_of, runs_to_confirm, step, unstarted_runs,
)
from hpo_operator.spec import ManifestError, experiment_spec_from_dict

FINISHED = ("Succeeded", "Failed")
# Trial counts and the best trial so far are display only: written at most this often. Phase
# and conditions are written at once.
STATUS_PERIOD_SECONDS = 2.0
# A step longer than this is logged with where its time went: trainers at a rung wait for steps.
SLOW_STEP_SECONDS = 1.0
# Normal events (Started, Paused, ...) are held and posted at most this often, one Event per reason for
# many trials (``coalesce_events``): their number follows the time, not the steps. Warnings go at once.
EVENT_PERIOD_SECONDS = 2.0

# Follow-ups in flight, at most one per experiment (each waits on kube's pool for its calls).
_FOLLOW_UPS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="hpo-follow-up")


class ExperimentRunner:
    def __init__(self, api: kube.Api, namespace: str, name: str, wake: Callable[[], None] = lambda: None):
        """``wake``: asks for the next step (called when a follow-up ends)."""
        self.api = api
        self.namespace = namespace
        self.name = name
        self.wake = wake
        self.state: Optional[ExperimentState] = None
        self.written: Optional[dict] = None  # the status this runner last wrote
        self.written_at = 0.0
        self.more_launches = False  # the last step left free slots for the next one
        self.following: Optional[Future] = None  # the follow-up in flight (kube.follow_up), if any
        self.launching: set[str] = set()  # the trials it launches
        self.deleting: list[Future] = []  # pod and claim deletions in flight
        self.held_events: list[tuple[Event, Optional[dict]]] = []  # with their trial's object reference
        self.events_lock = threading.Lock()  # the follow-up thread holds events too
        self.events_posted_at = 0.0

    @property
    def follow_up_in_flight(self) -> bool:
        return self.following is not None and not self.following.done()

    def settle_follow_up(self, wait: bool) -> Optional[Exception]:
        """Collect the follow-up once it has ended (``wait``: wait for it); what it failed with, if it did.
        A failed one left trials half-launched: the next step rebuilds from the API."""
        if self.following is None or (not wait and not self.following.done()):
            return None
        error = self.following.exception()
        self.following, self.launching = None, set()
        if error is not None:
            self.state = None
        return error

    def settle_deletions(self, logger, wait: bool = False) -> None:
        """Collect the deletions that have ended (``wait``: all of them). One that failed left a pod no run
        uses: the next step rebuilds from the API, which deletes it."""
        for deletion in [d for d in self.deleting if wait or d.done()]:
            self.deleting.remove(deletion)
            if deletion.exception() is not None:
                logger.warning(f"Deleting pods failed, rebuilding from the API: {deletion.exception()!r}")
                self.state = None

    def step(self, body: dict, observations: dict[str, Observations], problems: dict[str, list],
             pods: dict[str, dict], logger) -> bool:
        """One step; True once the experiment has finished (or was refused)."""
        started = time.monotonic()
        meta = body["metadata"]
        # Our own last write wins over a body the watch has not refreshed yet.
        status = {**(body.get("status") or {}), **(self.written or {})}
        try:
            spec = experiment_spec_from_dict(dict(body["spec"]))
        except ManifestError as err:
            self.settle_follow_up(wait=True)
            self.refuse(body, status, "InvalidSpec", "; ".join(err.problems), logger)
            return True
        self.api.ensure_sidecar_identity(body)
        self.settle_deletions(logger)
        fresh = self.state is None or self.state.generation != meta.get("generation")
        # A rebuild lists what the API has: after the follow-up in flight, not half-way through it.
        if self.follow_up_failed(self.settle_follow_up(wait=fresh), body, status, logger):
            return True
        fresh = self.state is None or self.state.generation != meta.get("generation")
        if fresh:
            pods = self.api.list_pods(self.namespace, self.name)  # first: a finished pod's observations are in
            trial_objs = self.api.list_trials(self.namespace, self.name)
            observations = {o["metadata"]["name"]: observations_of(o) for o in trial_objs}
            problems = {o["metadata"]["name"]: problems_of(o) for o in trial_objs}
        # Budget edits apply; edits that would corrupt the running experiment are refused (spec_changes.py).
        review = spec_changes.review(spec, status.get("acceptedSpec"),
                                     len(trial_objs) if fresh else len(self.state.books))
        spec = review.spec
        if fresh:
            self.state = ExperimentState.from_trials(self.name, spec, trial_objs, meta.get("generation"), pods=pods)
        now = kube.now()
        to_read, to_fence = runs_to_confirm(self.state, pods, observations, now, fresh)
        fences = {name: kube.run_fence(self.state.books[name]) + 1 for name in to_fence}
        fenced = self.api.fence_trials(self.namespace, fences)
        unstarted = unstarted_runs(self.state, fenced, pods) if fresh else set()
        for trial in self.api.get_trials(self.namespace, to_read) + fenced:
            # A run ended: the trials' cache may lag the pods', so its records come from the API.
            name = trial["metadata"]["name"]
            observations[name], problems[name] = observations_of(trial), problems_of(trial)
            if name in fences:
                self.state.books[name].written["runFence"] = fences[name]
        confirmed = time.monotonic()
        plan = step(self.state, spec, status, observations, pods, now, fresh=fresh, problems=problems,
                    unstarted=unstarted, max_launches=0 if self.follow_up_in_flight else LAUNCHES_PER_STEP)
        planned = time.monotonic()
        if self.touches_launching(plan) and self.follow_up_failed(self.settle_follow_up(wait=True), body, status,
                                                                  logger):
            return True
        if self.state is None:  # a plan on a state the failed follow-up invalidated is dropped
            self.more_launches = True  # rebuild at once
            return False
        try:
            kube.apply_decisions(self.api, plan, body, self.state.books, events=self.hold_events)
        except Exception:
            self.state = None  # half-applied: rebuild from the API next time
            raise
        self.delete(plan, body)
        if not self.follow_up_in_flight:
            # The last follow-up may have ended (badly) since this step began.
            if self.follow_up_failed(self.settle_follow_up(wait=True), body, status, logger):
                return True
            if self.state is None:
                self.more_launches = True
                return False
            self.send_follow_up(plan, spec, body, logger)
        self.more_launches = plan.more_launches
        executed = time.monotonic()
        if executed - started > SLOW_STEP_SECONDS:
            logger.info(f"Slow step of {executed - started:.2f} s: read {confirmed - started:.2f} s "
                        f"({len(to_read)} ended runs read, {len(fences)} fenced{', rebuilt' if fresh else ''}), "
                        f"decide {planned - confirmed:.2f} s, act {executed - planned:.2f} s "
                        f"({len(plan.trial_status)} trial statuses, {len(plan.delete_pods)} pods to delete, "
                        f"{len(plan.launches)} to launch)")
        st = plan.experiment_status
        st["observedGeneration"] = meta.get("generation")
        cond_status = {"Succeeded": "True", "Failed": "False"}.get(st["phase"], "Unknown")
        st["conditions"] = set_condition(status, "Succeeded", cond_status, st.get("reason") or "Running",
                                         st.get("message") or "trials are running", meta.get("generation"))
        problem = pod_problem_summary(plan.pod_problems)
        if problem or any(c.get("type") == POD_PROBLEM for c in st["conditions"]):
            # Pods that cannot start (a bad image, no node with a free GPU) show on the experiment too.
            # (never an empty message: the 1.20 API server takes "" in a custom resource's status for null)
            reason, message = problem or ("PodsStarted", "no trial pod has a problem starting")
            st["conditions"] = set_condition({"conditions": st["conditions"]}, POD_PROBLEM,
                                             "True" if problem else "False", reason, message, meta.get("generation"))
        review.record(st, status, meta.get("generation"))
        if review.announce(status):
            kopf.warn(body, reason=spec_changes.EVENT_REASON, message=review.message)
        self.write_status(st)
        if st["phase"] in FINISHED:
            self.settle_follow_up(wait=True)
            self.settle_deletions(logger, wait=True)
            self.post_held_events(body, force=True)
            # kopf.info would be dropped: its events follow the log level (HPO_EVENT_LEVEL, warnings by default).
            kopf.event(body, type="Normal" if st["phase"] == "Succeeded" else "Warning", reason=st["phase"],
                       message=st.get("message") or "")
            logger.info(f"Finished experiment name={self.name} phase={st['phase']} reason={st.get('reason')}")
            return True
        self.post_held_events(body)
        return False

    def hold_events(self, experiment: dict, books: dict, events: list[Event]) -> None:
        """Keep events for ``post_held_events`` (``kube.EventSink``)."""
        with self.events_lock:
            self.held_events += [(ev, books[ev.trial].ref if ev.trial else None) for ev in events]

    def post_held_events(self, body: dict, force: bool = False) -> None:
        """Post the events held, if a Warning is among them or EVENT_PERIOD_SECONDS have passed (``force``:
        now)."""
        with self.events_lock:
            urgent = force or any(ev.type == "Warning" for ev, _ in self.held_events)
            due = urgent or time.monotonic() - self.events_posted_at >= EVENT_PERIOD_SECONDS
            if not self.held_events or not due:
                return
            held, self.held_events = self.held_events, []
            self.events_posted_at = time.monotonic()
        kube.post_events(body, {ev.trial: ref for ev, ref in held if ev.trial}, [ev for ev, _ in held])

    def delete(self, plan: Plan, body: dict) -> None:
        """Send the plan's pod and claim deletions, in parallel, without waiting for them."""
        self.deleting += [kube.DELETE_POOL.submit(contextvars.copy_context().run, call)
                          for call in kube.deletions(self.api, plan, body)]

    def send_follow_up(self, plan: Plan, spec, body: dict, logger) -> None:
        """Start the follow-up of ``plan``: its launches, if any."""
        if not plan.launches:
            return
        self.launching = kube.launched_trials(plan)
        self.following = _FOLLOW_UPS.submit(contextvars.copy_context().run, self.follow_up, plan, spec, body,
                                            self.state.books, logger)
        self.following.add_done_callback(lambda _: self.wake())  # free slots wait for it to end

    def follow_up(self, plan: Plan, spec, body: dict, books: dict, logger) -> None:
        """A step's launches, in a follow-up thread."""
        started = time.monotonic()
        kube.follow_up(self.api, plan, spec, body, books, logger, events=self.hold_events)
        if time.monotonic() - started > SLOW_STEP_SECONDS:
            logger.info(f"Slow follow-up of {time.monotonic() - started:.2f} s ({len(plan.launches)} launched)")

    def touches_launching(self, plan: Plan) -> bool:
        """The plan writes or deletes something of a trial whose launch is still in flight (a stop at the
        experiment's end, say): it waits for that launch, or a pod created after its deletion would stay."""
        if not self.follow_up_in_flight:
            return False
        touched = set(plan.trial_status) | {trial for trial, _ in plan.delete_pods.values()}
        return bool(touched & self.launching)

    def follow_up_failed(self, error: Optional[Exception], body: dict, status: dict, logger) -> bool:
        """Deal with a follow-up's failure; True if it ended the experiment (a template the API server
        refused)."""
        if error is None:
            return False
        if isinstance(error, kube.TemplateRejected):
            self.refuse(body, status, "InvalidTrialTemplate", str(error), logger)
            return True
        logger.warning(f"Launching trials failed, rebuilding from the API: {error!r}")
        return False

    def write_status(self, st: dict, force: bool = False) -> None:
        last = self.written or {}
        if all(last.get(k) == v for k, v in st.items()):
            return
        urgent = force or any(k in st and st[k] != last.get(k)
                              for k in ("phase", "conditions", "startTime", "acceptedSpec"))
        if not urgent and time.monotonic() - self.written_at < STATUS_PERIOD_SECONDS:
            return  # the next step (at the latest the slow tick) writes it
        self.api.patch_experiment_status(self.namespace, self.name, st)
        self.written, self.written_at = {**last, **st}, time.monotonic()

    def refuse(self, body: dict, status: dict, reason: str, message: str, logger) -> None:
        """Fail the experiment for a problem only the user can fix; trials already recorded stay as they are."""
        self.post_held_events(body, force=True)
        kopf.warn(body, reason=reason, message=message)
        generation = body["metadata"].get("generation")
        self.write_status({"phase": "Failed", "reason": reason, "message": message,
                           "conditions": set_condition(status, "Succeeded", "False", reason, message, generation)},
                          force=True)
        logger.error(f"Refused experiment name={self.name}: {message}")
