"""A plan's API calls, in a crash-safe order, each part a wave of parallel calls through a lane.

The order: a trial's status records why its pod goes before the pod is
deleted (``write_decisions``, then ``delete_ended``); a trial and its claim
are created, and its status records the run, before its pod (``launch``).
Names are deterministic, so a repeat after a crash gets 409 and changes
nothing. A crash anywhere in between replays the decisions on the next step,
from the trials as written: a rebuild deletes a pod no run uses, and
launches a run recorded whose pod never came again as the same attempt.

None of these touch the experiment's state: they take what they need and
return what the owner must learn (``Launched``), so the owner alone keeps it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Optional

from kubernetes.client.rest import ApiException

from hpo_operator.controller.api import Api, TemplateRejected
from hpo_operator.controller.builders import build_claim, build_pod, build_trial, claim_name, object_ref
from hpo_operator.controller.lanes import Lane
from hpo_operator.controller.reconcile import Plan
from hpo_operator.controller.trials import has_records
from hpo_operator.spec.status import HPOTrialStatus

SIDECAR_IMAGE = os.environ.get("HPO_SIDECAR_IMAGE", "hpo-operator:0.1.0")
# How long a launch waits for its new claims to be bound before it creates their pods anyway.
CLAIM_BIND_SECONDS = 30.0
# Trials per deletecollection request: the label selector names them all in the URL (~40 bytes each).
DELETE_CHUNK = 100
# ...and at least this many, where a wave splits its trials into parallel requests (``chunks``).
MIN_DELETE_CHUNK = 4
# What the sidecar appends to; runFence 0 is the value its appends test (see Api.fence_trial).
EMPTY_RECORDS = HPOTrialStatus(observations=[], problems=[], problems_posted=0, run_fence=0).model_dump(
    by_alias=True, include={"observations", "problems", "problems_posted", "run_fence"})


async def read_ended_runs(api: Api, lane: Lane, namespace: str, to_read: list[str], fences: dict[str, int]
                          ) -> list[dict]:
    """The trials of runs that ended, from the API server: read, or fenced (``Api.fence_trial``)."""
    return await lane.wave([lambda n=n: api.get_trial(namespace, n) for n in to_read] +
                           [lambda n=n, f=f: api.fence_trial(namespace, n, f) for n, f in fences.items()])


async def write_decisions(api: Api, lane: Lane, namespace: str, plan: Plan) -> None:
    """The status of every trial the plan decided on, except those it launches (``launch`` writes theirs).
    A trainer waiting at a rung has its answer after the step's first round trip."""
    launched = launched_trials(plan)
    await lane.wave(lambda n=n, p=p: api.patch_trial_status(namespace, n, p)
                    for n, p in plan.trial_status.items() if n not in launched)


def chunks(trials, parts: int = 1) -> list[list[str]]:
    """The trials, sorted and without repeats, in about ``parts`` requests of at least MIN_DELETE_CHUNK and
    at most DELETE_CHUNK trials. The API server deletes a collection one object at a time: a wave's requests
    in parallel delete a large collection that many times sooner."""
    names = sorted(set(trials))
    size = min(DELETE_CHUNK, max(MIN_DELETE_CHUNK, -(-len(names) // max(parts, 1))))
    return [names[i:i + size] for i in range(0, len(names), size)]


def deletion_batches(runs: list[tuple[str, int]], parts: int = 1) -> list[tuple[int, list[str]]]:
    """(attempt, trials) per request: one deletecollection per attempt number and chunk of trials
    (``chunks``), selected by label, instead of one request per pod."""
    by_attempt: dict[int, list[str]] = {}
    for trial, attempt in runs:
        by_attempt.setdefault(attempt, []).append(trial)
    return [(attempt, chunk) for attempt, trials in sorted(by_attempt.items()) for chunk in chunks(trials, parts)]


async def delete_ended(api: Api, lane: Lane, namespace: str, experiment: str, runs: list[tuple[str, int]],
                       claims: list[str]) -> None:
    """The pods of ended runs ((trial, attempt)) and the claims of these trials, after the decisions that
    end them are on record."""
    calls = [lambda a=a, t=t: api.delete_pods(namespace, experiment, a, t)
             for a, t in deletion_batches(runs, lane.limit)]
    calls += [lambda t=chunk: api.delete_claims(namespace, experiment, t) for chunk in chunks(claims, lane.limit)]
    await lane.wave(calls)


def launched_trials(plan: Plan) -> set[str]:
    return {launch.trial.name for launch in plan.launches}


@dataclass(frozen=True)
class KnownTrial:
    """What a launch needs to know of a trial that exists already."""

    ref: Optional[dict]  # its object_ref; None: not created yet
    has_records: bool  # status.observations exists
    run_fence: int  # status.runFence as last written or read


@dataclass
class Launched:
    """What a launch learned, for the owner to keep: the trials it created (name -> object_ref), and those
    whose records now exist."""

    refs: dict[str, dict] = field(default_factory=dict)
    recorded: set[str] = field(default_factory=set)


async def launch(api: Api, lane: Lane, spec, experiment: dict, plan: Plan, known: dict[str, KnownTrial],
                 judge_first: bool = False) -> Launched:
    """The plan's launches, after its decisions, in three waves, each finished before the next starts:

    1. the new trials;
    2. the launched trials' status, with a new trial's empty records for its sidecar to append to, and
       checkpoint claims (waited for until bound, where their StorageClass binds at once:
       ``Api.binds_at_once``): after the ended trials' status (no listing shows more trials Running than the
       parallelism) and before any pod (its sidecar starts from what the status says). A crash before
       the pod leaves a trial Running without one: a rebuild relaunches it as the same attempt
       (``reconcile.unstarted_runs``);
    3. the pods.

    ``judge_first``: let the API server judge the first pod (a dry run) before anything is created.
    """
    namespace = experiment["metadata"]["namespace"]
    out = Launched()
    if judge_first and plan.launches:
        await judge_template(api, lane, spec, experiment, plan.launches[0])

    def create_trial(launch) -> None:
        trial, _ = api.create_trial(build_trial(experiment, launch.trial))
        out.refs[launch.trial.name] = object_ref(trial)
        if has_records(trial):
            out.recorded.add(launch.trial.name)

    await lane.wave(lambda launch=launch: create_trial(launch) for launch in plan.launches
                    if known[launch.trial.name].ref is None)
    refs = {name: out.refs.get(name) or k.ref for name, k in known.items()}

    def write_launched(launch) -> None:
        name = launch.trial.name
        # A new trial (or one a crash cut short) gets empty records for its sidecar to append to.
        recorded = known[name].has_records or name in out.recorded
        patch = {**({} if recorded else EMPTY_RECORDS), **plan.trial_status.get(name, {})}
        if patch:  # a run launched again as the same attempt may find its status as it should be
            api.patch_trial_status(namespace, name, patch)
        out.recorded.add(name)

    first = [launch for launch in plan.launches if spec.checkpoints.storage == "perTrial" and launch.attempt == 1]
    # (a later attempt's claim was created before the first attempt's pod)
    await lane.wave([lambda launch=launch: write_launched(launch) for launch in plan.launches] +
                    [lambda launch=launch: api.create_claim(build_claim(spec, refs[launch.trial.name]))
                     for launch in first])
    if first and await lane.call(api.binds_at_once, spec.checkpoints.storage_class_name):
        await lane.call(api.wait_bound, namespace, [claim_name(launch.trial.name) for launch in first],
                        CLAIM_BIND_SECONDS)
    await lane.wave(lambda launch=launch: create_pod(
        api, build_pod(spec, experiment, refs[launch.trial.name], launch, SIDECAR_IMAGE,
                       known[launch.trial.name].run_fence)) for launch in plan.launches)
    return out


async def judge_template(api: Api, lane: Lane, spec, experiment: dict, launch) -> None:
    """The validator cannot know every rule of every API server version; a template the server refuses
    then fails the experiment with no trial, claim or pod left behind."""
    probe = build_trial(experiment, launch.trial)
    probe["metadata"]["uid"] = "00000000-0000-0000-0000-000000000000"  # not created: no uid yet
    await lane.call(lambda: create_pod(api, build_pod(spec, experiment, probe, launch, SIDECAR_IMAGE), dry_run=True))


def create_pod(api: Api, pod: dict, dry_run: bool = False) -> None:
    try:
        api.create_pod(pod, dry_run=dry_run)
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
