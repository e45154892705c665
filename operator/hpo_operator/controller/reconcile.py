"""One reconcile step of an experiment, as a pure function: what the operator knows in, a plan out.

The operator keeps an :class:`ExperimentState` per experiment: the shared
``ExperimentEngine`` plus, per trial, how many observations it has acted on
and the status it last wrote. It is built from the HPOTrial objects (a fresh
list) when the operator starts, after any failed step, and when the spec
changes; every step in between only feeds it what is new: observations the
sidecars appended and pod phases, both from the operator's watch caches.
So a restarted operator makes the same decisions (nothing lives only in
memory), and a step costs what changed, not what exists.

:func:`reconcile` is the from-scratch form (objects in, plan out) the unit
tests chain; :func:`step` the incremental one the handler runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Collection, NamedTuple, Optional, Sequence

from hpo_operator.controller.builders import attempt_of, checkpoint_location, object_ref, pod_name, trial_of
from hpo_operator.controller.pods import compact_pod, failed_pod_kept, output_tail, pod_problem, run_outcome
from hpo_operator.controller.trials import (
    changed, has_records, observations_of, operator_fields, read_trial, status_of, text_value,
)
from hpo_operator.engine import ExperimentEngine, Launch
from hpo_operator.scheduling import Decision

# A pod the operator created may reach its watch cache a moment later: absent that long, it is not "vanished".
POD_APPEAR_GRACE = timedelta(seconds=30)
# Observations that changed nothing but progress are acknowledged (status.processed) lazily, at most this late.
LAZY_ACK = timedelta(seconds=30)
# A launch is two or three requests in sequence (the new trial, its status, its pod). The launches of a
# step go out as one batch, at most this many; the next batch (the next step's) waits for it, so new pods
# never crowd out the API server's answers to decisions.
LAUNCHES_PER_STEP = 16

Observations = Sequence[tuple[int, Optional[float]]]  # (epoch, objective value) as on record


@dataclass(frozen=True)
class Event:
    trial: Optional[str]  # None: on the experiment
    type: str  # Normal | Warning
    reason: str
    message: str


# An Event naming several trials lists them up to this many characters (the API server takes 1 KiB).
EVENT_MESSAGE_CHARS = 900
# A failed run's last output: this much on its trial's status (``lastOutput``), the end of it in its Event.
OUTPUT_CHARS = 2048
EVENT_OUTPUT_CHARS = 600


def coalesce_events(events: Sequence[Event]) -> list[Event]:
    """The Events one step posts: Warnings, and a Normal reason only one trial had, on their trial; the
    Normal events of several trials with one reason as a single Event on the experiment that names each
    once (with its latest message).

    A busy step of a thousand-trial experiment launches, pauses and stops dozens of trials; one Event
    each made Events the operator's most frequent write. Failures and sidecar problems stay per trial.
    """
    latest: dict[tuple[str, str], Event] = {}  # (reason, trial) -> that trial's latest Normal event of it
    for ev in events:
        if ev.type == "Normal" and ev.trial is not None:
            latest[(ev.reason, ev.trial)] = ev
    groups: dict[str, list[Event]] = {}  # held events of several steps may name a trial more than once
    for ev in latest.values():
        groups.setdefault(ev.reason, []).append(ev)
    out, grouped = [], set()
    for ev in events:
        if ev.type != "Normal" or ev.trial is None:
            out.append(ev)
        elif ev.reason not in grouped:
            grouped.add(ev.reason)
            group = groups[ev.reason]
            out.append(group[0] if len(group) == 1 else Event(None, "Normal", ev.reason, _list_trials(group)))
    return out


def _list_trials(group: list[Event]) -> str:
    message = f"{len(group)} trials: "
    for i, ev in enumerate(group):
        item = f"{ev.trial} ({ev.message})" + ("; " if i + 1 < len(group) else "")
        rest = f"and {len(group) - i} more"
        if len(message) + len(item) + (len(rest) if i + 1 < len(group) else 0) > EVENT_MESSAGE_CHARS:
            return message + rest
        message += item
    return message


@dataclass
class Plan:
    launches: list[Launch] = field(default_factory=list)
    more_launches: bool = False  # free slots left for the next step (at most max_launches per step)
    delete_pods: dict[str, tuple[str, int]] = field(default_factory=dict)  # pod -> (its trial, attempt)
    delete_claims: dict[str, str] = field(default_factory=dict)  # claim name -> its trial
    trial_status: dict[str, dict] = field(default_factory=dict)  # trial name -> merge patch
    experiment_status: dict = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    pod_problems: dict[str, tuple[str, str]] = field(default_factory=dict)  # trial -> what keeps its pod from starting

    def delete_run(self, trial: str, pod: str) -> None:
        self.delete_pods[pod] = (trial, attempt_of(trial, pod))


@dataclass
class TrialBook:
    """What the operator knows of one trial beyond the engine's TrialState."""

    trial_id: int
    ref: Optional[dict]  # the HPOTrial's object_ref (for events and owner references); None until created
    processed: int  # observations acted on
    decided: int  # decidedEpoch: the rung the latest decision was made at
    pod: Optional[str]
    written: dict  # the operator's status fields as on record
    problems_posted: int = 0  # sidecar problems already posted as events
    lazy_since: Optional[datetime] = None  # progress not yet acknowledged in status since then
    has_records: bool = True  # status.observations exists (written empty before the trial's first pod)
    pod_problem: Optional[tuple[str, str]] = None  # (Kubernetes' reason, message) keeping its pod from starting
    pod_problems_posted: set = field(default_factory=set)  # reasons posted as Warnings for its current pod
    output: Optional[str] = None  # the last failed run's last output (status.lastOutput)


@dataclass
class ExperimentState:
    name: str
    engine: ExperimentEngine
    books: dict[str, TrialBook]  # trial name -> book, in trial id order
    generation: Optional[int] = None
    awaiting: dict[str, datetime] = field(default_factory=dict)  # pods not yet seen in the cache -> since

    @classmethod
    def from_trials(cls, name: str, spec, trial_objs: list[dict], generation: Optional[int] = None,
                    pods: Optional[dict[str, dict]] = None) -> "ExperimentState":
        """``pods``: the experiment's pods, listed before the trials (see ``compact_pod``)."""
        views = sorted((read_trial(o) for o in trial_objs), key=lambda v: v.state.trial_id)
        engine = ExperimentEngine(name, spec)
        # A run recorded Paused or Completed at its last decision whose pod is still there: its exit is
        # still to be handled (and its pod deleted).
        exiting = [v.state.trial_id for v in views
                   if v.pod and v.pod in (pods or {}) and not (pods or {})[v.pod].get("deleting")]
        engine.restore([v.state for v in views], exiting=exiting)
        books = {v.name: TrialBook(v.state.trial_id, object_ref(v.obj), v.processed, v.decided_epoch, v.pod,
                                   operator_fields(v.obj), problems_posted_of(v.obj),
                                   has_records=has_records(v.obj), pod_problem=recorded_pod_problem(v.obj),
                                   pod_problems_posted={p[0] for p in [recorded_pod_problem(v.obj)] if p},
                                   output=(v.obj.get("status") or {}).get("lastOutput"))
                 for v in views}
        return cls(name, engine, books, generation)


def recorded_pod_problem(trial_obj: dict) -> Optional[tuple[str, str]]:
    """The problem a trial's ``PodProblem`` condition records, if it is True."""
    for cond in (trial_obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == POD_PROBLEM and cond.get("status") == "True":
            return cond.get("reason") or "", cond.get("message") or ""
    return None


# The condition, on a trial and on its experiment, saying what keeps a trial's pod from starting (True, with
# Kubernetes' reason and message); written only once a problem was seen.
POD_PROBLEM = "PodProblem"


def outcome_of(state: ExperimentState, pod: Optional[dict], now: datetime):
    """``pods.run_outcome`` with the experiment's trainer container and start timeout."""
    spec = state.engine.spec
    return run_outcome(pod, spec.trainer()["name"], now, spec.budget.start_timeout_seconds)


def problems_of(trial_obj: dict) -> list[dict]:
    return list((trial_obj.get("status") or {}).get("problems") or [])


def problems_posted_of(trial_obj: dict) -> int:
    status = trial_obj.get("status") or {}
    return min(int(status.get("problemsPosted") or 0), len(status.get("problems") or []))


def runs_ended(state: ExperimentState, pods: dict[str, dict], now: datetime, fresh: bool = False) -> list[str]:
    """Trials whose current run's pod has finished, or vanished (and is not merely too new for the cache)."""
    ended = []
    for name, book in state.books.items():
        if state.engine.trials[book.trial_id].phase != "Running" or not book.pod:
            continue
        pod = pods.get(book.pod)
        if pod is None and not fresh and now - state.awaiting.get(book.pod, now - POD_APPEAR_GRACE) < POD_APPEAR_GRACE:
            continue  # created moments ago; the cache has not seen it yet
        if outcome_of(state, pod, now) is not None:
            ended.append(name)
    return ended


def runs_to_read(state: ExperimentState, ended: Sequence[str], pods: dict[str, dict],
                 observations: dict[str, Observations], now: datetime) -> tuple[list[str], list[str]]:
    """Of the trials whose run ended (``runs_ended``), those whose records must come from the API before
    the run is judged: (read, fence).

    fence: the run failed or vanished, or its pod still runs (a trainer that ended unseen or never
    started, judged from its container). Its sidecar may have died with an append in flight, which the API
    server can still apply after any read; the operator raises the trial's ``runFence`` (the sidecar's
    appends require the value they started with) and judges the run on what that write returns.
    read: the run succeeded short of its last epoch in the cache; its sidecar acknowledged every append
    before it exited, so a read has them all. A run that succeeded with its last epoch cached needs neither.
    """
    read, fence = [], []
    for name in ended:
        book = state.books[name]
        outcome = outcome_of(state, pods.get(book.pod), now)
        last = max((epoch for epoch, _ in observations.get(name) or ()), default=0)
        if not (outcome and outcome.ok) or outcome.live:
            fence.append(name)
        elif last < state.engine.trials[book.trial_id].until:
            read.append(name)
    return read, fence


class ToConfirm(NamedTuple):
    read: list[str]
    fence: list[str]


def runs_to_confirm(state: ExperimentState, pods: dict[str, dict], observations: dict[str, Observations],
                    now: datetime, fresh: bool) -> ToConfirm:
    """The runs ended since the last step (``runs_ended``) whose trial must be read or fenced before the
    step judges them (``runs_to_read``).

    A rebuilt state (``fresh``) fences too: the list of trials it was built from may predate an append
    that a dead sidecar still had in flight.
    """
    return ToConfirm(*runs_to_read(state, runs_ended(state, pods, now, fresh), pods, observations, now))


def unstarted_runs(state: ExperimentState, fenced: list[dict], pods: dict[str, dict]) -> set[str]:
    """Of the trials a rebuilt state fenced (as that write left them), the runs that never started: no pod,
    and nothing recorded by their attempt. The operator stopped between recording the launch and creating
    the pod (or the creation failed): the same attempt is launched again, with no failure counted.
    """
    unstarted = set()
    for obj in fenced:
        name, status = obj["metadata"]["name"], obj.get("status") or {}
        book = state.books.get(name)
        if book is None or not book.pod or book.pod in pods:
            continue
        attempt = status.get("attempts")
        if not any(isinstance(o, dict) and o.get("attempt") == attempt for o in status.get("observations") or []):
            unstarted.add(name)
    return unstarted


def trials_of_pods(state: ExperimentState, pods: dict[str, dict]) -> dict[str, str]:
    """pod -> the trial it was made for (``trial_of``), for the pods of trials in ``state``."""
    return {pod: trial for pod in pods if (trial := trial_of(pod)) in state.books}


def reconcile(name: str, spec, status: dict, trial_objs: list[dict], pods: dict[str, dict],
              now: datetime) -> Plan:
    """One step from scratch: rebuild from the objects, act, and bring every trial's status up to date."""
    state = ExperimentState.from_trials(name, spec, trial_objs, pods=pods)
    observations = {o["metadata"]["name"]: observations_of(o) for o in trial_objs}
    problems = {o["metadata"]["name"]: problems_of(o) for o in trial_objs}
    return step(state, spec, status, observations, pods, now, fresh=True, problems=problems)


def step(state: ExperimentState, spec, status: dict, observations: dict[str, Observations],
         pods: dict[str, dict], now: datetime, fresh: bool = False,
         problems: Optional[dict[str, Sequence[dict]]] = None, unstarted: Collection[str] = (),
         max_launches: int = LAUNCHES_PER_STEP) -> Plan:
    """Feed ``state`` what is new and return what to do.

    ``pods``: pod name -> pod (see ``compact_pod``); ``problems``: trial name -> the problems its sidecar
    recorded. ``fresh``: observations and pods come from one consistent read (pods listed first), not
    from watch caches that may lag: no grace for pods not seen yet, and every trial's status is brought up
    to date. The observations of a run whose pod has ended must be as the API server had them after that
    end (``runs_to_confirm`` says which to read or fence): the run is judged on them at once.
    ``unstarted``: runs of a rebuilt state that never started (``unstarted_runs``): launched again.
    ``max_launches``: free slots to fill in this step (0 while the last step's launches are in flight).
    ``state`` is updated as if the plan succeeded; a caller that fails to execute the plan must drop it and
    rebuild from the API.
    """
    plan = Plan()
    engine = state.engine
    spec_name = state.name
    touched: set[str] = set(state.books) if fresh else set()

    # 1. New observations, each exactly once, in trial order then epoch order.
    for name, book in state.books.items():
        on_record = observations.get(name) or ()
        if len(on_record) <= book.processed:
            continue
        trial = engine.trials[book.trial_id]
        for epoch, value in on_record[book.processed:]:
            until_before = trial.until
            decision = engine.on_observation(trial.trial_id, epoch, value)
            book.processed += 1
            if decision is Decision.STOP:
                if book.pod:
                    plan.delete_run(name, book.pod)
                plan.events.append(Event(name, "Normal", "Stopped", trial.message))
            elif epoch >= until_before:
                book.decided = epoch  # tells the sidecar, which tells the waiting trainer
                if decision is Decision.PAUSE:
                    plan.events.append(Event(name, "Normal", "Paused", f"paused at rung epoch {epoch}"))
                elif trial.until > until_before:
                    plan.events.append(Event(name, "Normal", "PromotedInPlace",
                                             f"continues to epoch {trial.until} without a restart"))
            if decision is Decision.CONTINUE and epoch < until_before and trial.until == until_before:
                book.lazy_since = book.lazy_since or now  # progress only: acknowledged later
            else:
                touched.add(name)

    for name, reported in (problems or {}).items():
        if name in state.books and announce_problems(state.books[name], name, reported, plan):
            touched.add(name)

    # 2. Finished or vanished pods end their runs.
    for seen in [p for p in state.awaiting if p in pods]:
        state.awaiting.pop(seen)
    for name in runs_ended(state, pods, now, fresh):
        book = state.books[name]
        trial = engine.trials[book.trial_id]
        pod = pods.get(book.pod)
        state.awaiting.pop(book.pod, None)
        if name in unstarted:  # a rebuild's run whose pod never existed (unstarted_runs)
            engine.relaunch(trial.trial_id)
            touched.add(name)
            continue
        outcome = outcome_of(state, pod, now)
        engine.on_run_exit(trial.trial_id, outcome.ok, outcome.message)
        touched.add(name)
        failed = trial.phase in ("Pending", "Failed")
        if failed:
            book.output = output_tail(outcome.output, OUTPUT_CHARS) or None
        # A failed run's pod stays for `kubectl logs` until its trial runs again (its containers have ended).
        if pod is not None and not pod.get("deleting") and not (failed and failed_pod_kept(pod) and not outcome.live):
            plan.delete_run(name, book.pod)
        if failed:
            output = output_tail(outcome.output, EVENT_OUTPUT_CHARS)
            message = trial.message + (f"; last output:\n{output}" if output else "")
            plan.events.append(Event(name, "Warning", "Retrying" if trial.phase == "Pending" else "Failed", message))
        elif trial.phase == "Completed":
            plan.events.append(Event(name, "Normal", "Completed",
                                     f"{spec.objective.metric}={text_value(trial.last_value)} at epoch {trial.last_epoch}"))

    # 2b. A rebuild deletes the pods no run uses: the operator records why a pod goes before deleting it,
    #     and may have stopped in between.
    if fresh:
        for pod, trial in trials_of_pods(state, pods).items():
            book = state.books[trial]
            phase = engine.trials[book.trial_id].phase
            kept = book.pod == pod and phase in ("Pending", "Failed") and failed_pod_kept(pods[pod])
            if not pods[pod].get("deleting") and (book.pod != pod or phase != "Running") and not kept:
                plan.delete_run(trial, pod)

    # 2c. What keeps running trials' pods from starting: a condition on the trial, one Warning per reason.
    trainer = spec.trainer()["name"]
    for name, book in state.books.items():
        if engine.trials[book.trial_id].phase != "Running" or not book.pod or book.pod not in pods:
            continue
        problem = pod_problem(pods[book.pod], trainer)
        current = (problem.reason, problem.message) if problem else None
        if current != book.pod_problem and (current or book.pod_problem):
            book.pod_problem = current
            touched.add(name)
        if problem and problem.reason not in book.pod_problems_posted:
            book.pod_problems_posted.add(problem.reason)
            plan.events.append(Event(name, "Warning", problem.reason, f"pod {book.pod}: {problem.message}"))

    # 3. Budget: maxDuration, and a failed experiment stops what runs.
    start = status.get("startTime") or now.strftime("%Y-%m-%dT%H:%M:%SZ")
    limit = spec.budget.max_duration_seconds
    started_at = datetime.strptime(start, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    ended = []
    if limit is not None and (now - started_at).total_seconds() >= limit and engine.outcome is None:
        ended += engine.time_up()
    if engine.outcome is not None and engine.outcome.phase == "Failed":
        ended += engine.stop_all(f"stopped: experiment failed ({engine.outcome.reason})")
    for t in ended:
        touched.add(t.name)
        plan.events.append(Event(t.name, "Normal", "Stopped", t.message))
        pod = state.books[t.name].pod
        if pod and not (pod in pods and (pods[pod].get("deleting") or failed_pod_kept(pods[pod]))):
            plan.delete_run(t.name, pod)

    # 4. Free slots, at most max_launches of them.
    running = sum(1 for t in engine.trials.values() if t.phase == "Running")
    while running < spec.budget.parallelism:
        if len(plan.launches) >= max_launches:
            plan.more_launches = True
            break
        launch = engine.next_launch()
        if launch is None:
            break
        running += 1
        plan.launches.append(launch)
        name = launch.trial.name
        book = state.books.get(name)
        if book is None:
            book = state.books[name] = TrialBook(launch.trial.trial_id, None, 0, 0, None, {}, has_records=False)
        if book.pod and book.pod in pods and not pods[book.pod].get("deleting"):
            plan.delete_run(name, book.pod)  # the last failed run's pod, kept until now
        book.pod_problem, book.pod_problems_posted = None, set()
        book.pod = pod_name(name, launch.attempt)
        book.decided = launch.start_epoch
        state.awaiting[book.pod] = now
        touched.add(name)
        verb = {"new": "Started", "resume": "Resumed", "retry": "Restarted"}[launch.reason]
        plan.events.append(Event(name, "Normal", verb,
                                 f"epochs {launch.start_epoch + 1}..{launch.until} in pod {book.pod}"))

    paused = [t for t in engine.trials.values() if t.phase == "Paused"]
    outcome = engine.finish_if_done()

    # 5. Checkpoints: when the experiment ends, stopped and failed trials' claims go unless kept; the best stays.
    best = engine.best()
    if outcome is not None:
        touched.update(state.books)  # paused trials became Stopped
        plan.events += [Event(t.name, "Normal", "Stopped", t.message) for t in paused if t.phase == "Stopped"]
        if not spec.checkpoints.keep_checkpoints and spec.checkpoints.storage == "perTrial":
            for t in engine.trials.values():
                if t.phase in ("Stopped", "Failed") and (best is None or t.trial_id != best.trial.trial_id):
                    plan.delete_claims[checkpoint_location(spec, spec_name, t.name)[0]] = t.name

    # 6. Status of the trials that changed (progress-only ones at most LAZY_ACK late), and of the experiment.
    for name, book in state.books.items():
        if name not in touched and not (book.lazy_since and now - book.lazy_since >= LAZY_ACK):
            continue
        t = engine.trials[book.trial_id]
        claim, sub = checkpoint_location(spec, spec_name, name)
        desired = status_of(t, book.processed, book.pod, book.decided, f"{claim}:{sub or '/'}",
                            phase=engine.settled_phase(t.trial_id))
        desired["problemsPosted"] = book.problems_posted
        if book.output is not None:
            desired["lastOutput"] = book.output
        if book.pod_problem is not None or "conditions" in book.written:
            desired["conditions"] = pod_problem_conditions(book.written.get("conditions"), book.pod_problem, now)
        patch = changed(book.written, desired)
        book.lazy_since = None
        if patch:
            plan.trial_status[name] = patch
            book.written.update(patch)
    plan.experiment_status = experiment_status(engine, spec, spec_name, status, start, now, outcome, best)
    plan.pod_problems = {name: book.pod_problem for name, book in state.books.items()
                         if book.pod_problem and engine.trials[book.trial_id].phase == "Running"}
    return plan


def pod_problem_conditions(conditions: Optional[list], problem: Optional[tuple[str, str]], now: datetime
                           ) -> list[dict]:
    """A trial's conditions with ``PodProblem``: True with Kubernetes' reason and message once its pod could
    not start (kept when the run ends), False once its pod started or the trial runs again."""
    conditions = [dict(c) for c in conditions or []]
    old = next((c for c in conditions if c.get("type") == POD_PROBLEM), None)
    # (never an empty message: the 1.20 API server takes "" in a custom resource's status for null)
    status, reason, message = ("True", *problem) if problem else ("False", "NoProblem", "its pod has started")
    message = message or reason
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    new = {"type": POD_PROBLEM, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": old["lastTransitionTime"] if old and old.get("status") == status else stamp}
    return [c for c in conditions if c.get("type") != POD_PROBLEM] + [new]


def pod_problem_summary(problems: dict[str, tuple[str, str]]) -> Optional[tuple[str, str]]:
    """(reason, message) of the experiment's PodProblem condition: the first trial's problem, how many share it."""
    if not problems:
        return None
    first, (reason, message) = next(iter(problems.items()))
    more = len(problems) - 1
    return reason, f"{first}: {message}" + (f" (and {more} more trial{'s' * (more > 1)})" if more else "")


def announce_problems(book: TrialBook, name: str, problems: Sequence[dict], plan: Plan) -> bool:
    """One Warning Event per problem a trial's sidecar recorded (``status.problems``) and no step has posted;
    True if there were any.

    The sidecar may only write its trial's status, so the operator speaks for it. ``problemsPosted``
    goes into the trial's status, which is written before the events are posted: a restarted
    operator posts none twice.
    """
    if len(problems) <= book.problems_posted:
        return False
    for problem in problems[book.problems_posted:]:
        problem = problem if isinstance(problem, dict) else {}
        reason = str(problem.get("reason") or "unknown")
        run = f"run {problem['attempt']}: " if problem.get("attempt") else ""
        plan.events.append(Event(name, "Warning", _problem_event_reason(reason),
                                 run + str(problem.get("message") or reason)))
    book.problems_posted = len(problems)
    return True


def _problem_event_reason(reason: str) -> str:
    if reason == "epochs_repeated":
        return "EpochsRepeated"  # the trainer did not resume from its checkpoint
    if reason.startswith("metrics_file_"):
        return "BadMetricsFile"  # truncated, replaced or unreadable
    return "BadMetricsLine"


def experiment_status(engine: ExperimentEngine, spec, name: str, status: dict, start: str, now: datetime,
                      outcome, best) -> dict:
    counts = {k.lower(): v for k, v in engine.counts().items()}
    counts["created"] = len(engine.trials)
    phase = outcome.phase if outcome else "Running"
    ended = counts["stopped"] + counts["completed"] + counts["failed"]
    out = {"phase": phase, "trials": counts, "startTime": start, "observedGeneration": status.get("observedGeneration"),
           "progress": f"{ended}/{spec.budget.max_trials}"}
    if best is not None:
        claim, sub = checkpoint_location(spec, name, best.trial.name)
        out["best"] = {"trial": best.trial.name, "config": best.trial.config,
                       "value": best.value if best.value == best.value and abs(best.value) != float("inf") else None,
                       "epoch": best.epoch, "complete": best.complete, "checkpoint": f"{claim}:{sub or '/'}"}
        out["bestValue"] = text_value(best.value)
    if outcome is not None:
        out.update(reason=outcome.reason, message=outcome.message,
                   completionTime=status.get("completionTime") or now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return out
