"""The owner of one experiment: an asyncio task that alone reads and writes the experiment's state.

Each step reads (the watch caches, and the API server where they may lag),
decides (``reconcile.step``, pure) and acts (``actions``). What it learns of
the world arrives as messages: a wake-up when the watch caches see something
of the experiment change, and the end of the launch batch it started.
Nothing else touches its state: the calls run on the shared API threads and
return what they learned, and the owner applies that at the start of its
next step. The state is thrown away (and rebuilt from a fresh list of trials
and pods) only when the API may hold something it does not know: a batch of
calls failed half-way, or the spec changed.

A step sends its decisions without waiting for them: the trial statuses it
writes, then (once those are on record) its pod deletions and its launches (at
most one batch in flight). The next step decides and writes while they are in
flight, so a trainer waiting at a rung waits for its own status write, not for
a step's other writes, a wave of new pods or the API server's slow, one-by-one
deletion of a collection of pods. The decisions of successive steps form a
chain: a step's writes wait for the ones before only where they write the same
trial, and a link fails if any link before it failed, so what follows a
step's writes (its deletions and launches) never acts on a decision not on
record.

    wake-up ──▶ ┌─────────── owner (one task per experiment) ───────────┐
                │ read caches ─▶ confirm ended runs ─▶ step (pure) ─▶ act │
                └───▲──────────────────────────────────────────┬──────┘
                    │ Launched / failure                       │ decisions ─▶ launch batch,
                    └──────────────────────────────────────────┘ (chained)    deletions (in flight)
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Optional

import kopf

from hpo_operator.controller import actions, metrics, spec_changes
from hpo_operator.controller.api import Api, TemplateRejected
from hpo_operator.controller.events import Event, post_events
from hpo_operator.controller.lanes import Lanes
from hpo_operator.controller.reconcile import LAUNCHES_PER_STEP, Observations, Plan, runs_to_confirm, step, unstarted_runs
from hpo_operator.controller.state import ExperimentState, problems_of
from hpo_operator.controller.status import experiment_status_patch, set_condition, with_conditions
from hpo_operator.controller.trials import observations_of
from hpo_operator.resources import FINISHED_EXPERIMENT_PHASES, ExperimentPhase
from hpo_operator.spec import ManifestError, experiment_spec_from_dict

# Trial counts and the best trial so far are display only: written at most this often. Phase
# and conditions are written at once.
STATUS_PERIOD_SECONDS = 2.0
# A step longer than this is logged with where its time went: trainers at a rung wait for steps.
SLOW_STEP_SECONDS = 1.0
# Normal events (Started, Paused, ...) are held and posted at most this often, one Event per reason for
# many trials (``events.coalesce_events``): their number follows the time, not the steps. Warnings go at once.
EVENT_PERIOD_SECONDS = 2.0
# Pod-deletion waves in flight at once (the API server deletes a collection one pod at a time: waves in
# parallel delete sooner; a wave per step made twice the requests). Deletions decided meanwhile are held.
DELETION_WAVES_IN_FLIGHT = 2
# Steps whose decisions may be in flight at once; the next step waits for the oldest (the API server is
# slower than the steps: a longer queue would only delay the answers).
WRITES_IN_FLIGHT = 3


class DecisionsLost(Exception):
    """Decisions of an earlier step could not be written: the state is ahead of the API."""


@dataclass(frozen=True)
class Seen:
    """What the watch caches hold of one experiment at a moment."""

    body: dict  # the HPOExperiment
    observations: dict[str, Observations]  # trial -> what its sidecar recorded
    problems: dict[str, list]  # trial -> the problems its sidecar recorded
    pods: dict[str, dict]  # pod -> ``pods.compact_pod``


def now() -> datetime:
    return datetime.now(timezone.utc)


class ExperimentOwner:
    def __init__(self, api: Api, namespace: str, name: str, logger, clock: Callable[[], datetime] = now):
        self.api, self.namespace, self.name, self.logger, self.clock = api, namespace, name, logger, clock
        self.lanes = Lanes()
        self.state: Optional[ExperimentState] = None
        self.written: dict = {}  # the experiment status this owner last wrote
        self.written_at = 0.0
        self.more_launches = False  # the last step left free slots for the next one
        # The decisions in flight, a chain of links, oldest first: link -> the trials it writes.
        self.writing: dict[asyncio.Task, set[str]] = {}
        self.launching: Optional[asyncio.Task] = None  # the launch batch in flight, if any
        self.launching_trials: set[str] = set()
        self.launch_events: list[Event] = []  # the batch's events, posted once its trials exist
        self.deleting: list[asyncio.Task] = []  # the deletion waves in flight
        # Deletions decided while a wave is in flight go out together after it (pod -> (trial, attempt),
        # claim -> trial), once the decisions ``deletions_after`` stands for are on record.
        self.held_deletions: tuple[dict, dict] = ({}, {})
        self.deletions_after: Optional[asyncio.Task] = None
        self.refused: Optional[tuple[str, str]] = None  # (reason, message): fail the experiment with it
        self.held_events: list[tuple[Event, Optional[dict]]] = []  # with their trial's object reference
        self.events_posted_at = 0.0
        self.meter = metrics.ExperimentMeter(namespace, name)

    # ---- the loop ---------------------------------------------------------------------------------
    async def run(self, seen: Callable[[], Seen], wakeup: asyncio.Event, interval: float, batch: float) -> None:
        """Steps until the experiment has finished: at once while free slots are left, else when woken (by
        the caches, or a batch of calls ending), at least every ``interval`` seconds."""
        try:
            while True:
                wakeup.clear()
                try:
                    if await self.step(seen()):
                        return
                except DecisionsLost:
                    continue  # logged and counted where found; the next step rebuilds
                except Exception as err:  # API outages, conflicts: the next step starts from a fresh read
                    self.logger.warning(f"Reconcile step failed, retrying: {err!r}")
                    metrics.STEP_RETRIES.inc()
                    self.state = None
                    await asyncio.sleep(1)
                    continue
                if self.more_launches and self.launching is None:
                    await asyncio.sleep(batch)  # free slots are left: the next step at once
                    continue
                if await self.news(wakeup, interval):
                    await asyncio.sleep(batch)  # related changes arrive on two watches: one step for both
        finally:
            for task in [self.launching, *self.deleting, *self.writing]:
                if task is not None:
                    task.cancel()

    async def news(self, wakeup: asyncio.Event, timeout: float) -> bool:
        """Wait for a wake-up or the end of the launch batch in flight; False on timeout."""
        if self.launching is not None and self.launching.done():
            return True  # ended since the step: its free slots are the next step's
        waiting = asyncio.ensure_future(wakeup.wait())
        # (a deletion's end is news only when deletions wait for it: its pods leaving reach the watch)
        in_flight = {t for t in [self.launching, *(self.deleting if any(self.held_deletions) else [])]
                     if t is not None}
        try:
            done, _ = await asyncio.wait({waiting, *in_flight}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
        return bool(done)

    # ---- one step ---------------------------------------------------------------------------------
    async def step(self, seen: Seen) -> bool:
        """One step; True once the experiment has finished (or was refused)."""
        started = time.monotonic()
        body, meta = seen.body, seen.body["metadata"]
        status = {**(body.get("status") or {}), **self.written}  # our own last write wins over a stale body
        try:
            spec = experiment_spec_from_dict(dict(body["spec"]))
        except ManifestError as err:
            await self.finish_launch()
            await self.refuse(body, status, "InvalidSpec", "; ".join(err.problems))
            return True
        await self.lanes.decisions.call(self.api.ensure_sidecar_identity, body)
        self.collect_deletions()
        await self.collect_writes()
        if self.state is None or self.state.generation != meta.get("generation"):
            # A rebuild lists what the API has after the calls in flight, not half-way through them.
            await self.settle_writes()
            await self.finish_launch()
        self.collect_launch()
        fresh = self.state is None or self.state.generation != meta.get("generation")
        observations, problems, pods = seen.observations, seen.problems, seen.pods
        if fresh:
            self.meter.rebuilt(self.state)
            pods = await self.lanes.decisions.call(self.api.list_pods, self.namespace, self.name)  # first
            trial_objs = await self.lanes.decisions.call(self.api.list_trials, self.namespace, self.name)
            lost = trials_lost(status, trial_objs)
            if lost:
                await self.finish_launch()
                await self.refuse(body, status, "TrialsLost", lost)
                return True
            observations = {o["metadata"]["name"]: observations_of(o) for o in trial_objs}
            problems = {o["metadata"]["name"]: problems_of(o) for o in trial_objs}
        # Budget edits apply; edits that would corrupt the running experiment are refused (spec_changes.py).
        review = spec_changes.review(spec, status.get("acceptedSpec"),
                                     len(trial_objs) if fresh else len(self.state.books))
        spec = review.spec
        if fresh:
            self.state = ExperimentState.from_trials(self.name, spec, trial_objs, meta.get("generation"), pods=pods)
            if self.refused:
                self.state.engine.fail(*self.refused)
        observations, problems, unstarted, confirmed = await self.confirm_ended_runs(observations, problems, pods,
                                                                                     fresh)
        processed = self.meter.processed(self.state)
        plan = await asyncio.get_running_loop().run_in_executor(None, lambda: step(
            self.state, spec, status, observations, pods, self.clock(), fresh=fresh, problems=problems,
            unstarted=unstarted, max_launches=0 if self.launching else LAUNCHES_PER_STEP))
        planned = time.monotonic()
        if self.touches_launching(plan):
            # A stop at the experiment's end, say, of a trial whose pod is being created: a pod created
            # after its deletion would stay. The plan waits for the batch.
            await self.finish_launch()
            if self.collect_launch():
                self.more_launches = True  # the plan was made on a state the failed batch invalidated
                return False
        arrivals = self.meter.decided(plan, self.state, processed, recount=fresh)
        written = self.start_writes(plan, arrivals)
        self.hold_events([ev for ev in plan.events if ev.trial not in actions.launched_trials(plan)])
        if plan.delete_pods or plan.delete_claims:
            self.hold_deletions(plan, written)
        self.start_deletions()
        if plan.launches:
            self.start_launch(plan, spec, body, written)
        self.more_launches = plan.more_launches
        acted = time.monotonic()
        metrics.STEP_SECONDS.observe(acted - started)
        if acted - started > SLOW_STEP_SECONDS:
            self.logger.info(f"Slow step of {acted - started:.2f} s: read {confirmed - started:.2f} s "
                             f"{'(rebuilt) ' if fresh else ''}decide {planned - confirmed:.2f} s, act "
                             f"{acted - planned:.2f} s ({len(plan.trial_status)} trial statuses, "
                             f"{len(plan.delete_pods)} pods to delete, {len(plan.launches)} to launch; "
                             f"{len(self.writing)} steps' decisions in flight)")
        return await self.report(body, status, plan, review)

    async def confirm_ended_runs(self, observations, problems, pods, fresh: bool):
        """The records of runs whose pod ended, as the API server has them after that end (the caches may
        lag): read, or fenced where a dead sidecar may still have an append in flight
        (``reconcile.runs_to_read``). Returns the inputs with them, the runs a rebuild found never started,
        and when this ended."""
        to_read, to_fence = runs_to_confirm(self.state, pods, observations, self.clock(), fresh)
        if self.trials_being_written().intersection(to_read, to_fence) and not await self.settle_writes():
            raise DecisionsLost("writing the decisions of an earlier step failed")  # (the next step rebuilds)
        fences = {name: int(self.state.books[name].written.get("runFence") or 0) + 1 for name in to_fence}
        trials = await actions.read_ended_runs(self.api, self.lanes.decisions, self.namespace, to_read, fences)
        observations, problems = dict(observations), dict(problems)
        fenced = trials[len(to_read):]
        for trial in trials:
            name = trial["metadata"]["name"]
            observations[name], problems[name] = observations_of(trial), problems_of(trial)
            if name in fences:
                self.state.books[name].written["runFence"] = fences[name]
        unstarted = unstarted_runs(self.state, fenced, pods) if fresh else set()
        if unstarted:
            unstarted = await self.never_existed(unstarted, fenced)
        return observations, problems, unstarted, time.monotonic()

    async def never_existed(self, unstarted: set[str], fenced: list[dict]) -> set[str]:
        """Of the runs that left neither a pod nor a record, those whose pod Kubernetes never spoke of. The
        others had a pod, deleted before its sidecar recorded anything while no operator watched: their run
        ended (a failure, and the next attempt), not a launch to repeat as the same attempt, under the same
        pod name."""
        created = {o["metadata"]["name"]: o["metadata"].get("creationTimestamp") or "" for o in fenced}
        names = sorted(unstarted)
        existed = await self.lanes.decisions.wave(
            lambda n=n: self.api.pod_existed(self.namespace, self.state.books[n].pod, created.get(n, ""))
            for n in names)
        return {name for name, was in zip(names, existed) if not was}

    # ---- what is in flight ------------------------------------------------------------------------
    def start_writes(self, plan: Plan, arrivals: list[float]) -> Optional[asyncio.Task]:
        """Send the plan's decisions (``actions.write_decisions``) as the chain's next link; returns the link
        whose success means they and every decision before them are on record (None: nothing in flight)."""
        launched = actions.launched_trials(plan)
        trials = set(plan.trial_status) - launched
        before = next(reversed(self.writing), None)
        if not trials:
            self.meter.written(arrivals)
            return before
        overlaps = bool(trials & self.trials_being_written())
        link = asyncio.ensure_future(self.write_link(plan, before, overlaps, arrivals))
        self.writing[link] = trials
        return link

    def trials_being_written(self) -> set[str]:
        """The trials of the links still in flight (links end in order: the done ones are the oldest)."""
        return {trial for link, trials in self.writing.items() if not link.done() for trial in trials}

    async def write_link(self, plan: Plan, before: Optional[asyncio.Task], overlaps: bool,
                         arrivals: list[float]) -> None:
        """One step's decisions. Writes to a trial the link before also writes go after it (a later status
        must land last); the link fails if the one before failed (it stands for every decision up to it)."""
        started = time.monotonic()
        try:
            if before is not None and overlaps:
                await asyncio.wait({before})
            await actions.write_decisions(self.api, self.lanes.decisions, self.namespace, plan)
        finally:
            if before is not None:
                await asyncio.wait({before})
                failed = before.exception()  # (retrieved here either way: one failure, reported once)
        if before is not None and failed is not None:
            raise DecisionsLost("an earlier step's decisions were not written") from failed
        self.meter.written(arrivals)
        if time.monotonic() - started > SLOW_STEP_SECONDS:
            self.logger.info(f"Slow decision writes: {len(plan.trial_status)} trial statuses in "
                             f"{time.monotonic() - started:.2f} s")

    async def collect_writes(self) -> None:
        """Forget the links written; the oldest is waited for while WRITES_IN_FLIGHT are in flight. One that
        failed leaves the state ahead of the API: rebuilt in this step."""
        if len(self.writing) >= WRITES_IN_FLIGHT:
            await asyncio.wait({next(iter(self.writing))})
        for link in [link for link in self.writing if link.done()]:  # (the oldest: links end in order)
            del self.writing[link]
            if link.exception() is not None:
                self.lost_decisions(link.exception())

    async def settle_writes(self) -> bool:
        """Wait for every decision in flight; False if one was not written (the state must be rebuilt)."""
        if not self.writing:
            return True
        await asyncio.wait({next(reversed(self.writing))})  # (each link ends after the ones before it)
        links, self.writing = list(self.writing), {}
        errors = [link.exception() for link in links]
        if errors[-1] is not None:
            self.lost_decisions(errors[-1])
            return False
        return True

    def lost_decisions(self, error: BaseException) -> None:
        if self.state is None:
            return  # known already (a failed link fails every link after it)
        self.logger.warning(f"Writing decisions failed, rebuilding from the API: {error!r}")
        metrics.STEP_RETRIES.inc()
        self.state = None
        self.drop_held_deletions()  # (the rebuild finds what must go)

    async def settle(self) -> None:
        """Wait for everything in flight: decisions, the launch batch, deletions."""
        await self.settle_writes()
        await self.finish_launch()
        await self.settle_deletions()

    def start_launch(self, plan: Plan, spec, body: dict, written: Optional[asyncio.Task] = None) -> None:
        books = self.state.books
        known = {name: actions.KnownTrial(book.ref, book.has_records, int(book.written.get("runFence") or 0))
                 for name, book in books.items()}
        judge_first = all(book.ref is None for book in books.values())
        self.launching_trials = actions.launched_trials(plan)
        self.launch_events = [ev for ev in plan.events if ev.trial in self.launching_trials]
        self.launching = asyncio.ensure_future(after(written, lambda: actions.launch(
            self.api, self.lanes.launches, spec, body, plan, known, judge_first)))
        for launch in plan.launches:
            self.logger.info(f"Launching trial name={launch.trial.name} attempt={launch.attempt} "
                             f"reason={launch.reason} epochs={launch.start_epoch + 1}..{launch.until}")

    async def finish_launch(self) -> None:
        if self.launching is not None:
            await asyncio.wait({self.launching})

    def collect_launch(self) -> bool:
        """Learn what the ended launch batch did; True if it failed. A failed batch left trials
        half-launched: the state is rebuilt from the API (a template the server refused fails the experiment)."""
        if self.launching is None or not self.launching.done():
            return False
        task, self.launching, self.launching_trials = self.launching, None, set()
        events, self.launch_events = self.launch_events, []
        error = task.exception()
        if error is not None:
            self.state = None
            if isinstance(error, TemplateRejected):
                self.refused = ("InvalidTrialTemplate", str(error))
            else:
                self.logger.warning(f"Launching trials failed, rebuilding from the API: {error!r}")
            return True
        launched: actions.Launched = task.result()
        if self.state is not None:  # (else a rebuild reads it all)
            for name, ref in launched.refs.items():
                self.state.books[name].ref = ref
            for name in launched.recorded:
                self.state.books[name].has_records = True
        self.hold_events(events, launched.refs)
        return False

    def hold_deletions(self, plan: Plan, written: Optional[asyncio.Task]) -> None:
        """Keep the plan's deletions for ``start_deletions``; they follow its decisions (``written``, which
        stands for every decision before it too)."""
        self.held_deletions[0].update(plan.delete_pods)
        self.held_deletions[1].update(plan.delete_claims)
        self.deletions_after = written

    def start_deletions(self) -> None:
        """Send the deletions held as one wave, unless DELETION_WAVES_IN_FLIGHT are: the steps come faster
        than the API server deletes, and a wave per step multiplied the requests."""
        if len(self.deleting) >= DELETION_WAVES_IN_FLIGHT or not any(self.held_deletions):
            return
        (pods, claims), written = self.held_deletions, self.deletions_after
        self.drop_held_deletions()
        self.deleting.append(asyncio.ensure_future(after(written, lambda: actions.delete_ended(
            self.api, self.lanes.deletions, self.namespace, self.name, list(pods.values()), list(claims.values())))))

    def drop_held_deletions(self) -> None:
        self.held_deletions, self.deletions_after = ({}, {}), None

    def collect_deletions(self) -> None:
        """One that failed left a pod no run uses: the next step rebuilds from the API, which deletes it (and
        what was held is dropped: the rebuild finds it again)."""
        for task in [t for t in self.deleting if t.done()]:
            self.deleting.remove(task)
            if task.exception() is not None:
                self.logger.warning(f"Deleting pods failed, rebuilding from the API: {task.exception()!r}")
                self.state = None
                self.drop_held_deletions()

    async def settle_deletions(self) -> None:
        """Wait until every deletion decided has been sent and answered."""
        while self.deleting or any(self.held_deletions):
            if self.deleting:
                await asyncio.wait(self.deleting)
            self.collect_deletions()
            self.start_deletions()

    def touches_launching(self, plan: Plan) -> bool:
        """The plan writes or deletes something of a trial whose launch is still in flight."""
        if self.launching is None:
            return False
        touched = set(plan.trial_status) | {trial for trial, _ in plan.delete_pods.values()}
        return bool(touched & self.launching_trials)

    # ---- what the user sees -----------------------------------------------------------------------
    async def report(self, body: dict, status: dict, plan: Plan, review) -> bool:
        """Write the experiment's status, post events; True once it has finished."""
        generation = body["metadata"].get("generation")
        st = with_conditions(plan.experiment_status, status, generation, plan.pod_problems)
        if st["phase"] in FINISHED_EXPERIMENT_PHASES and not await self.settle_writes():
            raise DecisionsLost("the last decisions were not written")  # (the next step rebuilds)
        review.record(st, status, generation)
        if review.announce(status):
            kopf.warn(body, reason=spec_changes.EVENT_REASON, message=review.message)
        await self.write_status(st)
        if st["phase"] not in FINISHED_EXPERIMENT_PHASES:
            self.post_held_events(body)
            return False
        await self.finish_launch()
        self.collect_launch()
        await self.settle_deletions()
        self.post_held_events(body, force=True)
        if self.refused:
            kopf.warn(body, reason=self.refused[0], message=self.refused[1])
        # kopf.info would be dropped: its events follow the log level (HPO_EVENT_LEVEL, warnings by default).
        kopf.event(body, type="Normal" if st["phase"] == ExperimentPhase.SUCCEEDED else "Warning", reason=st["phase"],
                   message=st.get("message") or "")
        self.logger.info(f"Finished experiment name={self.name} phase={st['phase']} reason={st.get('reason')}")
        return True

    def hold_events(self, events: list[Event], refs: Optional[dict[str, dict]] = None) -> None:
        """Keep events for ``post_held_events``, with their trials' object references."""
        books = self.state.books if self.state else {}
        refs = {**{name: book.ref for name, book in books.items()}, **(refs or {})}
        self.held_events += [(ev, refs.get(ev.trial)) for ev in events]

    def post_held_events(self, body: dict, force: bool = False) -> None:
        """Post the events held, if a Warning is among them or EVENT_PERIOD_SECONDS have passed (``force``:
        now)."""
        urgent = force or any(ev.type == "Warning" for ev, _ in self.held_events)
        due = urgent or time.monotonic() - self.events_posted_at >= EVENT_PERIOD_SECONDS
        if not self.held_events or not due:
            return
        held, self.held_events = self.held_events, []
        self.events_posted_at = time.monotonic()
        post_events(body, {ev.trial: ref for ev, ref in held if ev.trial}, [ev for ev, _ in held])

    async def write_status(self, st: dict, force: bool = False) -> None:
        if all(self.written.get(k) == v for k, v in st.items()):
            return
        urgent = force or any(k in st and st[k] != self.written.get(k)
                              for k in ("phase", "conditions", "startTime", "acceptedSpec"))
        if not urgent and time.monotonic() - self.written_at < STATUS_PERIOD_SECONDS:
            return  # the next step (at the latest the slow tick) writes it
        await self.lanes.decisions.call(self.api.patch_experiment_status, self.namespace, self.name,
                                        experiment_status_patch(st))
        self.written, self.written_at = {**self.written, **st}, time.monotonic()

    async def refuse(self, body: dict, status: dict, reason: str, message: str) -> None:
        """Fail the experiment for a spec only the user can fix; trials already recorded stay as they are."""
        await self.settle_writes()
        self.post_held_events(body, force=True)
        kopf.warn(body, reason=reason, message=message)
        generation = body["metadata"].get("generation")
        await self.write_status({"phase": ExperimentPhase.FAILED, "reason": reason, "message": message,
                                 "conditions": set_condition(status, "Succeeded", "False", reason, message,
                                                             generation)}, force=True)
        self.logger.error(f"Refused experiment name={self.name}: {message}")


def trials_lost(status: dict, trials: list[dict]) -> Optional[str]:
    """Why the experiment cannot go on, if the API server has fewer trials than the status records created,
    more than one launch batch can explain (its trials are counted before they exist): something else deleted
    them. Starting again from trial 0 would repeat the search and hide the loss."""
    created = int((status.get("trials") or {}).get("created") or 0)
    if created - len(trials) <= LAUNCHES_PER_STEP:
        return None
    return (f"status.trials.created records {created} trials created, the API server has {len(trials)}: the "
            f"others were deleted by something other than the operator (a user, or the garbage collector: on "
            f"Kubernetes 1.20 it can take every custom resource's dependents for orphans after an API server "
            f"restart, kubernetes/kubernetes#104342). What they recorded is gone; rather than start the search "
            f"again from trial 0 the experiment stops. Re-create it to start over")


async def after(written: Optional[asyncio.Task], calls: Callable):
    """``calls()`` once the decisions ``written`` stands for are on record; their failure is this one's."""
    if written is not None:
        await written
    return await calls()
