"""One reconcile step of an experiment, as a pure function: API objects in, a plan out.

Level-based: the whole state is rebuilt from the experiment's HPOTrial objects
and pods on every step, through the same ExperimentEngine every backend uses.
Nothing lives only in memory, so a restarted operator makes the same
decisions. The handler executes the plan (see ``handlers.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Optional

from hpo_operator.controller.builders import checkpoint_location
from hpo_operator.controller.trials import TrialView, changed, read_trial, status_of, text_value
from hpo_operator.engine import ExperimentEngine, Launch
from hpo_operator.scheduling import Decision


@dataclass(frozen=True)
class Event:
    trial: Optional[str]  # None: on the experiment
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Plan:
    launches: list[Launch] = field(default_factory=list)
    delete_pods: list[str] = field(default_factory=list)
    delete_claims: list[str] = field(default_factory=list)
    trial_status: dict[str, dict] = field(default_factory=dict)  # trial name -> merge patch
    experiment_status: dict = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)


def _pod_outcome(pod: Optional[dict]) -> Optional[tuple[bool, str]]:
    """(succeeded, message) once a pod has finished, or None while it runs."""
    if pod is None:
        return False, "pod disappeared (deleted or evicted)"
    phase = (pod.get("status") or {}).get("phase")
    if phase == "Succeeded":
        return True, ""
    if phase == "Failed":
        reasons = []
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or {}
            if term and term.get("exitCode", 0) != 0:
                reasons.append(f"{cs['name']} exited {term.get('exitCode')} ({term.get('reason', 'Error')})")
        return False, "; ".join(reasons) or (pod.get("status") or {}).get("reason") or "pod failed"
    return None


def reconcile(name: str, spec, status: dict, trial_objs: list[dict], pods: dict[str, dict],
              now: datetime) -> Plan:
    plan = Plan()
    views = sorted((read_trial(o) for o in trial_objs), key=lambda v: v.state.trial_id)
    engine = ExperimentEngine(name, spec)
    engine.restore([v.state for v in views])
    by_id = {v.state.trial_id: v for v in views}
    processed = {v.name: v.processed for v in views}
    decided = {v.name: v.decided_epoch for v in views}
    pod_of = {v.name: v.pod for v in views}

    # 1. New observations, each exactly once, in trial order then epoch order.
    for view in views:
        for epoch, value in view.pending:
            trial = engine.trials[view.state.trial_id]
            until_before = trial.until
            decision = engine.on_observation(trial.trial_id, epoch, value)
            processed[view.name] += 1
            if decision is Decision.STOP:
                if pod_of[view.name]:
                    plan.delete_pods.append(pod_of[view.name])
                plan.events.append(Event(view.name, "Normal", "Stopped", trial.message))
            elif epoch >= until_before:
                decided[view.name] = epoch  # tells the sidecar, which tells the waiting trainer
                if decision is Decision.PAUSE:
                    plan.events.append(Event(view.name, "Normal", "Paused", f"paused at rung epoch {epoch}"))
                elif trial.until > until_before:
                    plan.events.append(Event(view.name, "Normal", "PromotedInPlace",
                                             f"continues to epoch {trial.until} without a restart"))

    # 2. Finished or vanished pods end their runs.
    for view in views:
        trial = engine.trials[view.state.trial_id]
        pod_name = pod_of[view.name]
        if trial.phase != "Running" or not pod_name:
            continue
        outcome = _pod_outcome(pods.get(pod_name))
        if outcome is None:
            continue
        ok, message = outcome
        engine.on_run_exit(trial.trial_id, ok, message)
        if pod_name in pods:
            plan.delete_pods.append(pod_name)
        if trial.phase == "Pending":
            plan.events.append(Event(view.name, "Warning", "Retrying", trial.message))
        elif trial.phase == "Failed":
            plan.events.append(Event(view.name, "Warning", "Failed", trial.message))
        elif trial.phase == "Completed":
            plan.events.append(Event(view.name, "Normal", "Completed",
                                     f"{spec.objective.metric}={text_value(trial.last_value)} at epoch {trial.last_epoch}"))

    # 3. Budget: maxDuration, and a failed experiment stops what runs.
    start = status.get("startTime") or now.strftime("%Y-%m-%dT%H:%M:%SZ")
    limit = spec.budget.max_duration_seconds
    started_at = datetime.strptime(start, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    if limit is not None and (now - started_at).total_seconds() >= limit and engine.outcome is None:
        for t in engine.time_up():
            if pod_of.get(t.name):
                plan.delete_pods.append(pod_of[t.name])
    if engine.outcome is not None and engine.outcome.phase == "Failed":
        for t in engine.stop_all(f"stopped: experiment failed ({engine.outcome.reason})"):
            if pod_of.get(t.name):
                plan.delete_pods.append(pod_of[t.name])

    # 4. Free slots.
    running = sum(1 for t in engine.trials.values() if t.phase == "Running")
    while running < spec.budget.parallelism:
        launch = engine.next_launch()
        if launch is None:
            break
        running += 1
        plan.launches.append(launch)
        pod_of[launch.trial.name] = f"{launch.trial.name}-{launch.attempt}"
        decided[launch.trial.name] = launch.start_epoch
        verb = {"new": "Started", "resume": "Resumed", "retry": "Restarted"}[launch.reason]
        plan.events.append(Event(launch.trial.name, "Normal", verb,
                                 f"epochs {launch.start_epoch + 1}..{launch.until} in pod {pod_of[launch.trial.name]}"))

    outcome = engine.finish_if_done()

    # 5. Checkpoints: when the experiment ends, stopped trials' claims go unless kept; the best stays.
    best = engine.best()
    if outcome is not None and not spec.checkpoints.keep_checkpoints and spec.checkpoints.storage == "perTrial":
        for t in engine.trials.values():
            if t.phase == "Stopped" and (best is None or t.trial_id != best.trial.trial_id):
                plan.delete_claims.append(checkpoint_location(spec, name, t.name)[0])

    # 6. Status of every trial (only what changed) and of the experiment.
    for tid, t in engine.trials.items():
        view = by_id.get(tid)
        claim, sub = checkpoint_location(spec, name, t.name)
        desired = status_of(view, t, processed.get(t.name, 0), pod_of.get(t.name), decided.get(t.name, 0),
                            f"{claim}:{sub or '/'}")
        current = (view.obj.get("status") or {}) if view else {}
        patch = changed(current, desired)
        if patch:
            plan.trial_status[t.name] = patch
    plan.experiment_status = experiment_status(engine, spec, name, status, start, now, outcome, best)
    announce_problems(views, plan)
    return plan


def announce_problems(views: list[TrialView], plan: Plan) -> None:
    """One Warning Event per problem a trial's sidecar recorded (``status.problems``) and no step has posted.

    The sidecar may only write its trial's status, so the operator speaks for it. ``problemsPosted``
    goes into the trial's status, which is written before the events are posted: a restarted
    operator posts none twice.
    """
    for view in views:
        status = view.obj.get("status") or {}
        problems = status.get("problems") or []
        posted = min(int(status.get("problemsPosted") or 0), len(problems))
        if posted == len(problems):
            continue
        for problem in problems[posted:]:
            problem = problem if isinstance(problem, dict) else {}
            reason = str(problem.get("reason") or "unknown")
            run = f"run {problem['attempt']}: " if problem.get("attempt") else ""
            plan.events.append(Event(view.name, "Warning", _problem_event_reason(reason),
                                     run + str(problem.get("message") or reason)))
        plan.trial_status.setdefault(view.name, {})["problemsPosted"] = len(problems)


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
    out = {"phase": phase, "trials": counts, "startTime": start, "observedGeneration": status.get("observedGeneration")}
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
