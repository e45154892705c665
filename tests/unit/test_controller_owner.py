"""The experiment's owner, one step after another: a step's pod deletions go out at once and its launches
as one batch in flight; the next step's decisions wait for neither, and only the owner applies what a batch
learned. These are the steps the operator runs (``handlers.run_experiment`` feeds the same owner the watch
caches).

The API here is the TEST DOUBLE ``support.api_double.RecordingApi``: the order of calls across the owner's
lanes is what is tested, and a real API server gives no way to hold a pod creation half-way. The calls
themselves are exercised against a real API server in the integration tier.
"""

from __future__ import annotations

import asyncio
import logging
import time

from kubernetes.client.rest import ApiException

from hpo_operator.controller.owner import DELETION_WAVES_IN_FLIGHT, ExperimentOwner, Seen
from hpo_operator.controller.reconcile import LAUNCHES_PER_STEP
from support.api_double import RecordingApi, running_pod, succeeded_pod

LOG = logging.getLogger("test")


def experiment(manifest, **budget) -> dict:
    manifest["spec"]["budget"] = {"parallelism": 2, "maxTrials": 3, **budget}
    manifest["spec"]["scheduler"] = {"algorithm": "fifo", "maxResource": 3}
    return {"apiVersion": "hpo.dev/v1alpha1", "kind": "HPOExperiment",
            "metadata": {"name": "exp", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": manifest["spec"], "status": {}}


def completed(*trials: str) -> tuple[dict, dict]:
    """(observations, pods) as the caches show them once these trials' first runs trained all 3 epochs."""
    return ({t: [(1, 0.5), (2, 0.4), (3, 0.3)] for t in trials},
            {f"{t}-1": succeeded_pod() for t in trials})


async def stepped(owner: ExperimentOwner, seen: Seen) -> bool:
    """One step, and its decisions written."""
    finished = await owner.step(seen)
    await owner.settle_writes()
    return finished


def in_flight(owner: ExperimentOwner) -> bool:
    return owner.launching is not None and not owner.launching.done()


async def started(manifest, **budget) -> tuple[RecordingApi, ExperimentOwner, dict]:
    """An owner whose first step's launches have gone out: (the API, the owner, the experiment)."""
    api = RecordingApi()
    owner = ExperimentOwner(api, "ns", "exp", LOG)
    body = experiment(manifest, **budget)
    await stepped(owner, Seen(body, {}, {}, {}))
    await until(lambda: not in_flight(owner))
    return api, owner, body


async def until(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_decision_goes_out_while_the_last_steps_launches_are_in_flight(manifest, quiet_kopf):
    async def scenario():
        api, owner, body = await started(manifest)
        assert set(api.pods) == {"exp-0000-1", "exp-0001-1"}

        api.gate.clear()  # exp-0002's pod will hang in creation
        observations, pods = completed("exp-0000")
        await stepped(owner, Seen(body, observations, {}, {**pods, "exp-0001-1": running_pod()}))
        await until(lambda: ("create trial", "exp-0002") in api.calls)
        assert in_flight(owner)

        observations, pods = completed("exp-0000", "exp-0001")
        await stepped(owner, Seen(body, observations, {}, pods))
        # exp-0001's outcome is on record although exp-0002's pod is not created yet.
        assert ("status", "exp-0001", False) in api.calls
        assert "exp-0002-1" not in api.pods and in_flight(owner)
        assert owner.more_launches  # its free slot waits for the batch in flight

        # Its pod's deletion does not wait for the launches either.
        await until(lambda: ("delete pods", (("exp-0001", 1),)) in api.calls)

        # The batch's end is news: it wakes the owner (for the free slot) before any timeout.
        await until(lambda: all(t.done() for t in owner.deleting))
        owner.collect_deletions()
        woken = asyncio.ensure_future(owner.news(asyncio.Event(), timeout=5))
        await asyncio.sleep(0.2)
        assert not woken.done()
        api.gate.set()
        assert await woken
        assert api.calls.index(("status", "exp-0001", False)) < api.calls.index(("create", "Pod", "exp-0002-1"))
        assert api.calls.index(("status", "exp-0001", False)) < api.calls.index(("delete pods", (("exp-0001", 1),)))
        # What the batch learned (the new trial's object) is the owner's once it steps again, not before.
        assert owner.state.books["exp-0002"].ref is None
        await stepped(owner, Seen(body, observations, {}, pods))
        assert owner.state.books["exp-0002"].ref["metadata"]["uid"] == "uid-exp-0002"

    asyncio.run(scenario())


def test_a_decision_goes_out_while_another_trials_status_write_is_slow(manifest, quiet_kopf):
    """A trainer at a rung waits for its own trial's status write, not for another trial's slow one; what
    follows a decision (its ended pod's deletion, a launch into its slot) waits until it is on record."""
    async def scenario():
        api, owner, body = await started(manifest, maxTrials=4)
        release = api.hold_status("exp-0000")
        observations, pods = completed("exp-0000")
        await owner.step(Seen(body, observations, {}, {**pods, "exp-0001-1": running_pod()}))
        observations, pods = completed("exp-0000", "exp-0001")
        await owner.step(Seen(body, observations, {}, pods))
        await until(lambda: ("status", "exp-0001", False) in api.calls)  # the second step's decision is out
        await asyncio.sleep(0.2)
        assert ("status", "exp-0000", False) not in api.calls  # the first's is held...
        # ...and nothing that acts on either has gone out.
        assert not [c for c in api.calls if c[0] in ("delete pods", "create trial") and c[1:] != ("exp-0000",)
                    and c[1:] != ("exp-0001",)]
        release.set()
        await owner.settle()
        calls = api.calls
        assert calls.index(("status", "exp-0000", False)) < calls.index(("delete pods", (("exp-0000", 1),)))
        assert calls.index(("status", "exp-0000", False)) < calls.index(("create trial", "exp-0002"))
        assert calls.index(("status", "exp-0000", False)) < calls.index(("delete pods", (("exp-0001", 1),)))

    asyncio.run(scenario())


def test_a_trials_status_waits_only_for_writes_of_it_still_in_flight(manifest, quiet_kopf):
    """Once a trial's write has landed, its next one goes out at once, though another trial's write from a
    later step is still in flight (the chain orders writes of the same trial, nothing more)."""
    async def scenario():
        api, owner, body = await started(manifest)
        pods = {"exp-0000-1": running_pod(), "exp-0001-1": running_pod()}
        problem = {"reason": "bad_metrics_line", "message": "line 3 is not JSON", "attempt": 1}
        release_first = api.hold_status("exp-0000")
        await owner.step(Seen(body, {}, {"exp-0000": [problem]}, pods))  # held
        release = api.hold_status("exp-0001")
        await owner.step(Seen(body, {}, {"exp-0000": [problem], "exp-0001": [problem]}, pods))  # held
        release_first.set()
        await until(lambda: ("status", "exp-0000", False) in api.calls)
        await owner.step(Seen(body, {}, {"exp-0000": [problem, problem], "exp-0001": [problem]}, pods))
        await until(lambda: api.calls.count(("status", "exp-0000", False)) == 2, seconds=3)
        assert ("status", "exp-0001", False) not in api.calls
        release.set()
        await owner.settle()
        assert api.created["exp-0000"]["status"]["problemsPosted"] == 2

    asyncio.run(scenario())


def test_pods_ended_while_deletions_are_in_flight_go_together_after_them(manifest, quiet_kopf):
    """Steps come faster than the API server deletes: DELETION_WAVES_IN_FLIGHT waves in flight, the rest held
    and sent as one wave when one ends (not one request per step)."""
    assert DELETION_WAVES_IN_FLIGHT == 2

    async def scenario():
        api, owner, body = await started(manifest, parallelism=4, maxTrials=6)
        api.deletion_gate.clear()
        trials = [f"exp-000{i}" for i in range(4)]
        running = {f"{t}-1": running_pod() for t in trials}
        for n in range(1, 5):
            observations, pods = completed(*trials[:n])
            await stepped(owner, Seen(body, observations, {}, {**running, **pods}))
            await until(lambda: len(owner.deleting) == min(n, 2))
        woken = asyncio.ensure_future(owner.news(asyncio.Event(), timeout=5))
        api.deletion_gate.set()
        assert await woken  # a wave's end is news while deletions wait for it
        await owner.settle()
        deletions = [c[1] for c in api.calls if c[0] == "delete pods"]
        assert sorted(deletions[:2]) == [(("exp-0000", 1),), (("exp-0001", 1),)]
        assert deletions[2:] == [(("exp-0002", 1), ("exp-0003", 1))]

    asyncio.run(scenario())


def test_a_trials_later_status_lands_after_its_earlier_one_still_in_flight(manifest, quiet_kopf):
    async def scenario():
        api, owner, body = await started(manifest)
        pods = {"exp-0000-1": running_pod(), "exp-0001-1": running_pod()}
        problem = {"reason": "bad_metrics_line", "message": "line 3 is not JSON", "attempt": 1}
        release = api.hold_status("exp-0000")
        await owner.step(Seen(body, {}, {"exp-0000": [problem]}, pods))  # problemsPosted 1: held
        await owner.step(Seen(body, {}, {"exp-0000": [problem, problem]}, pods))  # problemsPosted 2
        await asyncio.sleep(0.2)
        release.set()
        await owner.settle()
        assert api.created["exp-0000"]["status"]["problemsPosted"] == 2

    asyncio.run(scenario())


def test_a_stop_of_a_trial_still_being_launched_waits_for_its_pod(manifest, quiet_kopf):
    async def scenario():
        api = RecordingApi()
        owner = ExperimentOwner(api, "ns", "exp", LOG)
        body = experiment(manifest, parallelism=1, maxDuration=1)
        api.gate.clear()
        await stepped(owner, Seen(body, {}, {}, {}))
        await until(lambda: ("create trial", "exp-0000") in api.calls)
        await asyncio.sleep(1.1)  # maxDuration is up: the next step stops exp-0000, whose pod is still being created
        asyncio.get_running_loop().call_later(0.3, api.gate.set)
        assert await stepped(owner, Seen(body, {}, {}, {}))  # finished: time is up
        # Deleted after it was created: a pod created after its deletion would have kept running.
        assert api.calls.index(("create", "Pod", "exp-0000-1")) < api.calls.index(("delete pods", (("exp-0000", 1),)))
        assert api.created["exp-0000"]["status"]["phase"] == "Stopped"

    asyncio.run(scenario())


def test_a_failed_launch_batch_makes_the_next_step_rebuild_and_launch_the_same_attempt(manifest, quiet_kopf):
    async def scenario():
        api = RecordingApi()
        owner = ExperimentOwner(api, "ns", "exp", LOG)
        body = experiment(manifest, parallelism=1, maxRetries=0)
        api.pod_error = ApiException(status=500, reason="etcd timed out")
        await stepped(owner, Seen(body, {}, {}, {}))
        await until(lambda: not in_flight(owner))

        api.pod_error = None
        api.calls.clear()
        await stepped(owner, Seen(body, {}, {}, {}))
        await until(lambda: not in_flight(owner))
        # Rebuilt from the API: the trial recorded Running without a pod is fenced and launched again as the
        # same attempt, with no failure counted (maxRetries 0 would have failed it).
        assert api.calls[:3] == [("list pods",), ("list trials",), ("fence", "exp-0000")]
        assert ("create", "Pod", "exp-0000-1") in api.calls
        assert api.created["exp-0000"]["status"]["phase"] == "Running"
        assert api.created["exp-0000"]["status"].get("failures", 0) == 0

    asyncio.run(scenario())


def test_a_restarted_operator_counts_a_pod_deleted_before_it_recorded_anything_as_a_failed_run(manifest,
                                                                                              quiet_kopf):
    """The operator was down while a new trial's pod was deleted, before its sidecar recorded anything: no
    pod, no record. Kubernetes' Events about the pod show it existed: that run failed, and the next one is
    attempt 2 (a new pod name). A pod with no Event never existed: the same attempt again, no failure."""
    async def scenario():
        api, owner, body = await started(manifest, parallelism=2, maxRetries=1)
        assert set(api.pods) == {"exp-0000-1", "exp-0001-1"}
        del api.pods["exp-0000-1"], api.pods["exp-0001-1"]
        api.pods_that_existed.add("exp-0000-1")  # (exp-0001-1's creation never reached the API server)
        restarted = ExperimentOwner(api, "ns", "exp", LOG)
        api.calls.clear()
        await stepped(restarted, Seen(body, {}, {}, {}))
        await until(lambda: not in_flight(restarted))
        assert {("events of", "exp-0000-1"), ("events of", "exp-0001-1")} <= set(api.calls)
        assert ("create", "Pod", "exp-0000-2") in api.calls
        assert (api.created["exp-0000"]["status"]["attempts"], api.created["exp-0000"]["status"]["failures"]) == (2, 1)
        assert ("create", "Pod", "exp-0001-1") in api.calls
        assert (api.created["exp-0001"]["status"]["attempts"],
                api.created["exp-0001"]["status"].get("failures", 0)) == (1, 0)

    asyncio.run(scenario())


def test_a_restarted_operator_that_finds_trials_deleted_by_someone_else_stops_instead_of_starting_over(
        manifest, quiet_kopf):
    async def scenario():
        api, owner, body = await started(manifest, parallelism=2, maxTrials=60)
        # The status records 40 trials created; the API server has 2 (the garbage collector took the rest).
        body = {**body, "status": {"phase": "Running", "trials": {"created": 40}}}
        restarted = ExperimentOwner(api, "ns", "exp", LOG)
        api.calls.clear()
        assert await stepped(restarted, Seen(body, {}, {}, dict(api.pods)))
        assert (api.experiment_status["phase"], api.experiment_status["reason"]) == ("Failed", "TrialsLost")
        assert "records 40 trials created, the API server has 2" in api.experiment_status["message"]
        assert not [c for c in api.calls if c[0] in ("create trial", "create", "delete pods")]

        # Up to one launch batch may be counted before its trials exist (a crash during the batch).
        body = {**body, "status": {"phase": "Running", "trials": {"created": 2 + LAUNCHES_PER_STEP}}}
        api.experiment_status.clear()
        assert not await stepped(ExperimentOwner(api, "ns", "exp", LOG), Seen(body, {}, {}, dict(api.pods)))
        assert api.experiment_status.get("phase") != "Failed"

    asyncio.run(scenario())


def test_a_template_the_api_server_refuses_fails_the_experiment_and_stops_what_runs(manifest, quiet_kopf):
    async def scenario():
        api, owner, body = await started(manifest, parallelism=2, maxTrials=3)
        # exp-0000 ends; the template was edited since into one the API server refuses: exp-0002's pod fails.
        api.pod_error = ApiException(status=422, reason="Unprocessable Entity")
        observations, pods = completed("exp-0000")
        await stepped(owner, Seen(body, observations, {}, {**pods, "exp-0001-1": running_pod()}))
        await until(lambda: not in_flight(owner))
        finished = await stepped(owner, Seen(body, observations, {}, dict(api.pods)))
        assert finished
        assert (api.experiment_status["phase"], api.experiment_status["reason"]) == ("Failed", "InvalidTrialTemplate")
        # exp-0001 was running: it is stopped, and its pod deleted; what exp-0000 recorded stays.
        assert api.created["exp-0001"]["status"]["phase"] == "Stopped"
        assert any(c[0] == "delete pods" and ("exp-0001", 1) in c[1] for c in api.calls)
        assert "exp-0001-1" not in api.pods
        assert api.created["exp-0000"]["status"]["phase"] == "Completed"
        assert ("exp", "InvalidTrialTemplate") in [(target, reason) for target, reason, _ in quiet_kopf]

    asyncio.run(scenario())


def test_normal_events_of_several_steps_go_out_together_and_warnings_at_once(manifest, quiet_kopf):
    async def scenario():
        api, owner, body = await started(manifest, maxRetries=0, maxFailedTrials=2)
        running = {"exp-0000-1": running_pod(), "exp-0001-1": running_pod()}
        await stepped(owner, Seen(body, {}, {}, running))
        # Both launches in one Event on the experiment, not one per trial.
        assert [(target, reason) for target, reason, _ in quiet_kopf] == [("exp", "Started")]
        assert "exp-0000" in quiet_kopf[0][2] and "exp-0001" in quiet_kopf[0][2]

        observations, pods = completed("exp-0000")
        await stepped(owner, Seen(body, observations, {}, {**running, **pods}))
        assert [reason for _, reason, _ in quiet_kopf] == ["Started"]  # Completed is held (EVENT_PERIOD_SECONDS)
        failed = {"status": {"phase": "Failed", "containerStatuses": [
            {"name": "trainer", "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}, "deleting": False}
        # The slot exp-0000 freed went to exp-0002 in a launch batch; once it is done its Started is held too.
        await until(lambda: not in_flight(owner))
        assert [reason for _, reason, _ in quiet_kopf] == ["Started"]
        await stepped(owner, Seen(body, observations, {}, {**pods, "exp-0001-1": failed}))
        # A Warning is not held, and takes what was held with it.
        assert {(target, reason) for target, reason, _ in quiet_kopf[1:]} == {("exp-0000", "Completed"),
                                                                             ("exp-0002", "Started"),
                                                                             ("exp-0001", "Failed")}

    asyncio.run(scenario())
