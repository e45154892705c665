"""One reconcile step of an experiment, as a pure function: what the operator knows in, a plan out.

A step feeds the experiment's :class:`ExperimentState` (``state.py``) only
what is new: observations the sidecars appended and pod phases, both from the
operator's watch caches. So a step costs what changed, not what exists.

:func:`step` is a few named phases, each feeding the state one kind of news
and adding its part to the plan.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Collection, NamedTuple, Optional, Sequence

from hpo_operator.controller.builders import attempt_of, checkpoint_location, pod_name, trial_of
from hpo_operator.controller.events import Event
from hpo_operator.controller.pods import failed_pod_kept, output_tail, pod_problem, run_outcome
from hpo_operator.controller.state import ExperimentState, TrialBook
from hpo_operator.controller.status import experiment_status, pod_problem_conditions
from hpo_operator.controller.trials import changed, status_of
from hpo_operator.engine import Launch
from hpo_operator.resources import ExperimentPhase, TrialPhase, text_value
from hpo_operator.scheduling import Decision

# A pod the operator created may reach its watch cache a moment later: absent that long, it is not "vanished".
POD_APPEAR_GRACE = timedelta(seconds=30)
# A launch is two or three requests in sequence (the new trial, its status, its pod). The launches of a
# step go out as one batch, at most this many; the next batch (the next step's) waits for it, so new pods
# never crowd out the API server's answers to decisions.
LAUNCHES_PER_STEP = 16
# A failed run's last output: this much on its trial's status (``lastOutput``), the end of it in its Event.
OUTPUT_CHARS = 2048
EVENT_OUTPUT_CHARS = 600

Observations = Sequence[tuple[int, Optional[float], Optional[float]]]  # (epoch, objective, seconds) as on record
# How a run ended (``Plan.run_ends``), by the phase its trial is in after ``on_run_exit``.
RUN_END_OF_PHASE = {TrialPhase.COMPLETED: "completed", TrialPhase.PAUSED: "paused", TrialPhase.PENDING: "retried",
                    TrialPhase.FAILED: "failed"}


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
    # What the step did, counted (the operator's metrics): the scheduler's answer to each observation
    # (continue, pause, stop, promote: in place), and the runs ended by outcome (metrics.RUN_OUTCOMES).
    decisions: Counter = field(default_factory=Counter)
    run_ends: Counter = field(default_factory=Counter)

    def delete_run(self, trial: str, pod: str) -> None:
        self.delete_pods[pod] = (trial, attempt_of(trial, pod))


def outcome_of(state: ExperimentState, pod: Optional[dict], now: datetime):
    """``pods.run_outcome`` with the experiment's trainer container and start timeout."""
    spec = state.engine.spec
    return run_outcome(pod, spec.trainer()["name"], now, spec.budget.start_timeout_seconds)


def runs_ended(state: ExperimentState, pods: dict[str, dict], now: datetime, fresh: bool = False) -> list[str]:
    """Trials whose current run's pod has finished, or vanished (and is not merely too new for the cache)."""
    ended = []
    for name, book in state.books.items():
        if state.engine.trials[book.trial_id].phase != TrialPhase.RUNNING or not book.pod:
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
        last = max((record[0] for record in observations.get(name) or ()), default=0)
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


@dataclass(frozen=True)
class StepInput:
    """What one step is fed besides the state.

    ``pods``: pod name -> pod (``compact_pod``); ``problems``: trial name -> the problems its sidecar
    recorded. ``fresh``: observations and pods come from one consistent read (pods listed first), not
    from watch caches that may lag: no grace for pods not seen yet, and every trial's status is brought up
    to date. The observations of a run whose pod has ended must be as the API server had them after that
    end (``runs_to_confirm`` says which to read or fence): the run is judged on them at once.
    ``unstarted``: runs of a rebuilt state that never started (``unstarted_runs``): launched again.
    ``max_launches``: free slots to fill in this step (0 while the last step's launches are in flight).
    """

    spec: object
    status: dict  # the experiment's status as on record
    observations: dict[str, Observations]
    pods: dict[str, dict]
    now: datetime
    fresh: bool = False
    problems: dict[str, Sequence[dict]] = field(default_factory=dict)
    unstarted: Collection[str] = ()
    max_launches: int = LAUNCHES_PER_STEP


def step(state: ExperimentState, spec, status: dict, observations: dict[str, Observations],
         pods: dict[str, dict], now: datetime, fresh: bool = False,
         problems: Optional[dict[str, Sequence[dict]]] = None, unstarted: Collection[str] = (),
         max_launches: int = LAUNCHES_PER_STEP) -> Plan:
    """Feed ``state`` what is new (see ``StepInput``) and return what to do.

    ``state`` is updated as if the plan succeeded; a caller that fails to execute the plan must drop it and
    rebuild from the API.
    """
    given = StepInput(spec, status, observations, pods, now, fresh, problems or {}, unstarted, max_launches)
    plan = Plan()
    touched: set[str] = set(state.books) if fresh else set()
    touched |= act_on_observations(state, given, plan)
    touched |= announce_sidecar_problems(state, given, plan)
    touched |= end_runs(state, given, plan)
    if fresh:
        delete_pods_no_run_uses(state, given, plan)
    touched |= note_pod_problems(state, given, plan)
    touched |= apply_budget(state, given, plan)
    touched |= fill_free_slots(state, given, plan)
    paused = [t for t in state.engine.trials.values() if t.phase == TrialPhase.PAUSED]
    outcome = state.engine.finish_if_done()
    if outcome is not None:
        touched |= close_experiment(state, given, plan, paused)
    plan.trial_status = trial_status_patches(state, given, touched)
    start = status.get("startTime") or now.strftime("%Y-%m-%dT%H:%M:%SZ")
    plan.experiment_status = experiment_status(state.engine, spec, state.name, status, start, now, outcome,
                                               state.engine.best())
    plan.pod_problems = {name: book.pod_problem for name, book in state.books.items()
                         if book.pod_problem and state.engine.trials[book.trial_id].phase == TrialPhase.RUNNING}
    return plan


def act_on_observations(state: ExperimentState, given: StepInput, plan: Plan) -> set[str]:
    """New observations, each exactly once, in trial order then epoch order; the trials to write."""
    touched = set()
    for name, book in state.books.items():
        on_record = given.observations.get(name) or ()
        if len(on_record) <= book.processed:
            continue
        trial = state.engine.trials[book.trial_id]
        for epoch, value, *seconds in on_record[book.processed:]:
            until_before = trial.until
            decision = state.engine.on_observation(trial.trial_id, epoch, value, *seconds)
            book.processed += 1
            plan.decisions["promote" if decision is Decision.CONTINUE and trial.until > until_before
                           else decision.value] += 1
            if decision is Decision.STOP:
                if book.pod:
                    plan.delete_run(name, book.pod)
                    plan.run_ends["stopped"] += 1
                plan.events.append(Event(name, "Normal", "Stopped", trial.message))
            elif epoch >= until_before:
                book.decided = epoch  # tells the sidecar, which tells the waiting trainer
                if decision is Decision.PAUSE:
                    plan.events.append(Event(name, "Normal", "Paused", f"paused at rung epoch {epoch}"))
                elif trial.until > until_before:
                    plan.events.append(Event(name, "Normal", "PromotedInPlace",
                                             f"continues to epoch {trial.until} without a restart"))
            # Progress alone is acknowledged with the trial's next write: the sidecar's append already shows
            # it in the trial's columns, and a rebuild feeds it again.
            progress_only = decision is Decision.CONTINUE and epoch < until_before and trial.until == until_before
            if not progress_only:
                touched.add(name)
    return touched


def announce_sidecar_problems(state: ExperimentState, given: StepInput, plan: Plan) -> set[str]:
    return {name for name, reported in given.problems.items()
            if name in state.books and announce_problems(state.books[name], name, reported, plan)}


def end_runs(state: ExperimentState, given: StepInput, plan: Plan) -> set[str]:
    """Finished or vanished pods end their runs."""
    engine, pods = state.engine, given.pods
    for seen in [p for p in state.awaiting if p in pods]:
        state.awaiting.pop(seen)
    touched = set()
    for name in runs_ended(state, pods, given.now, given.fresh):
        book = state.books[name]
        trial = engine.trials[book.trial_id]
        pod = pods.get(book.pod)
        state.awaiting.pop(book.pod, None)
        touched.add(name)
        if name in given.unstarted:  # a rebuild's run whose pod never existed (unstarted_runs)
            engine.relaunch(trial.trial_id)
            plan.run_ends["unstarted"] += 1
            continue
        outcome = outcome_of(state, pod, given.now)
        engine.on_run_exit(trial.trial_id, outcome.ok, outcome.message)
        plan.run_ends[RUN_END_OF_PHASE.get(trial.phase, "failed")] += 1
        failed = trial.phase in (TrialPhase.PENDING, TrialPhase.FAILED)
        if failed:
            book.output = output_tail(outcome.output, OUTPUT_CHARS) or None
        # A failed run's pod stays for `kubectl logs` until its trial runs again (its containers have ended).
        if pod is not None and not pod.get("deleting") and not (failed and failed_pod_kept(pod) and not outcome.live):
            plan.delete_run(name, book.pod)
        if failed:
            output = output_tail(outcome.output, EVENT_OUTPUT_CHARS)
            message = trial.message + (f"; last output:\n{output}" if output else "")
            plan.events.append(Event(name, "Warning", "Retrying" if trial.phase == TrialPhase.PENDING else "Failed", message))
        elif trial.phase == TrialPhase.COMPLETED:
            plan.events.append(Event(name, "Normal", "Completed", f"{given.spec.objective.metric}="
                                     f"{text_value(trial.last_value)} at epoch {trial.last_epoch}"))
    return touched


def delete_pods_no_run_uses(state: ExperimentState, given: StepInput, plan: Plan) -> None:
    """A rebuild deletes the pods no run uses: the operator records why a pod goes before deleting it, and
    may have stopped in between."""
    for pod, trial in trials_of_pods(state, given.pods).items():
        book = state.books[trial]
        phase = state.engine.trials[book.trial_id].phase
        kept = book.pod == pod and phase in (TrialPhase.PENDING, TrialPhase.FAILED) and failed_pod_kept(given.pods[pod])
        if not given.pods[pod].get("deleting") and (book.pod != pod or phase != TrialPhase.RUNNING) and not kept:
            plan.delete_run(trial, pod)


def note_pod_problems(state: ExperimentState, given: StepInput, plan: Plan) -> set[str]:
    """What keeps running trials' pods from starting: a condition on the trial, one Warning per reason."""
    trainer = given.spec.trainer()["name"]
    touched = set()
    for name, book in state.books.items():
        if state.engine.trials[book.trial_id].phase != TrialPhase.RUNNING or not book.pod or book.pod not in given.pods:
            continue
        problem = pod_problem(given.pods[book.pod], trainer)
        current = (problem.reason, problem.message) if problem else None
        if current != book.pod_problem and (current or book.pod_problem):
            book.pod_problem = current
            touched.add(name)
        if problem and problem.reason not in book.pod_problems_posted:
            book.pod_problems_posted.add(problem.reason)
            plan.events.append(Event(name, "Warning", problem.reason, f"pod {book.pod}: {problem.message}"))
    return touched


def apply_budget(state: ExperimentState, given: StepInput, plan: Plan) -> set[str]:
    """maxDuration, and a failed experiment stops what runs."""
    engine, pods = state.engine, given.pods
    limit = given.spec.budget.max_duration_seconds
    start = given.status.get("startTime")
    started_at = datetime.strptime(start, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc) if start else given.now
    ended = []
    time_up = limit is not None and (given.now - started_at).total_seconds() >= limit and engine.outcome is None
    failed = engine.outcome is not None and engine.outcome.phase == ExperimentPhase.FAILED
    running = {t.name for t in engine.trials.values() if t.phase == TrialPhase.RUNNING} if time_up or failed else set()
    if time_up:
        ended += engine.time_up()
    if failed:
        ended += engine.stop_all(f"stopped: experiment failed ({engine.outcome.reason})")
    if running:
        plan.run_ends["stopped"] += sum(t.name in running for t in ended)
    for t in ended:
        plan.events.append(Event(t.name, "Normal", "Stopped", t.message))
        pod = state.books[t.name].pod
        if pod and not (pod in pods and (pods[pod].get("deleting") or failed_pod_kept(pods[pod]))):
            plan.delete_run(t.name, pod)
    return {t.name for t in ended}


def fill_free_slots(state: ExperimentState, given: StepInput, plan: Plan) -> set[str]:
    """Free slots, at most ``max_launches`` of them."""
    engine, pods = state.engine, given.pods
    running = sum(1 for t in engine.trials.values() if t.phase == TrialPhase.RUNNING)
    while running < given.spec.budget.parallelism:
        if len(plan.launches) >= given.max_launches:
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
        state.awaiting[book.pod] = given.now
        verb = {"new": "Started", "resume": "Resumed", "retry": "Restarted"}[launch.reason]
        plan.events.append(Event(name, "Normal", verb,
                                 f"epochs {launch.start_epoch + 1}..{launch.until} in pod {book.pod}"))
    return {launch.trial.name for launch in plan.launches}


def close_experiment(state: ExperimentState, given: StepInput, plan: Plan, paused: list) -> set[str]:
    """The experiment ended: paused trials became Stopped; stopped and failed trials' claims go unless kept
    (the best trial's stays)."""
    spec, best = given.spec, state.engine.best()
    plan.events += [Event(t.name, "Normal", "Stopped", t.message) for t in paused if t.phase == TrialPhase.STOPPED]
    if not spec.checkpoints.keep_checkpoints and spec.checkpoints.storage == "perTrial":
        for t in state.engine.trials.values():
            if t.phase in (TrialPhase.STOPPED, TrialPhase.FAILED) and (best is None or t.trial_id != best.trial.trial_id):
                plan.delete_claims[checkpoint_location(spec, state.name, t.name)[0]] = t.name
    return set(state.books)


def trial_status_patches(state: ExperimentState, given: StepInput, touched: set[str]) -> dict[str, dict]:
    """Status patches of the trials that changed."""
    patches = {}
    for name, book in state.books.items():
        if name not in touched:
            continue
        t = state.engine.trials[book.trial_id]
        claim, sub = checkpoint_location(given.spec, state.name, name)
        desired = status_of(t, book.processed, book.pod, book.decided, f"{claim}:{sub or '/'}",
                            phase=state.engine.settled_phase(t.trial_id))
        desired["problemsPosted"] = book.problems_posted
        if book.output is not None:
            desired["lastOutput"] = book.output
        if book.pod_problem is not None or "conditions" in book.written:
            desired["conditions"] = pod_problem_conditions(book.written.get("conditions"), book.pod_problem,
                                                           given.now)
        patch = changed(book.written, desired)
        if patch:
            patches[name] = patch
            book.written.update(patch)
    return patches


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


