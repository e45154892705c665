"""The incremental reconcile step: state kept between steps, inputs from watch caches that may lag.

The handler's caches see the operator's own writes (new pods, new trials) a
moment late, and a run's last observation and its pod ending arrive on two
different watches in either order. These tests feed ``step`` exactly those
situations and check nothing is decided wrongly.
"""

from __future__ import annotations

from datetime import timedelta

from hpo_operator.controller.builders import build_trial, claim_name
import asyncio
import logging

from hpo_operator.controller.owner import ExperimentOwner, Seen
from hpo_operator.controller.reconcile import (
    LAUNCHES_PER_STEP, POD_APPEAR_GRACE, ToConfirm, runs_ended, runs_to_confirm, runs_to_read, step,
    unstarted_runs,
)
from hpo_operator.controller.state import ExperimentState
from hpo_operator.spec import experiment_spec_from_dict
from support.api_double import RecordingApi, running_pod, succeeded_pod

from test_controller_reconcile import EXPERIMENT, T0, reconcile


class Operator:
    """The handler's side: one ExperimentState, caches handed in by the test."""

    def __init__(self, manifest: dict, **budget):
        manifest["spec"]["budget"] = {"parallelism": 1, "maxTrials": 2, **budget}
        manifest["spec"]["scheduler"] = {"algorithm": "fifo", "maxResource": 3}
        self.manifest_spec = manifest["spec"]
        self.spec = experiment_spec_from_dict(manifest["spec"])
        self.state = ExperimentState.from_trials("exp", self.spec, [])
        self.status: dict = {}
        self.records: dict[str, dict] = {}  # what the API holds, as written by the plans

    def step(self, observations=None, pods=None, at=timedelta(0)):
        plan = step(self.state, self.spec, self.status, observations or {}, pods or {}, T0 + at)
        for launch in plan.launches:
            name = launch.trial.name
            if name not in self.records:
                self.records[name] = build_trial(EXPERIMENT, launch.trial)
                self.records[name]["status"] = {"observations": []}
                self.state.books[name].ref = self.records[name]
        for name, patch in plan.trial_status.items():
            self.records[name]["status"].update(patch)
        self.status = plan.experiment_status
        return plan


def test_a_pod_the_cache_has_not_seen_yet_is_not_taken_for_a_vanished_one(manifest):
    op = Operator(manifest)
    op.step()
    plan = op.step(pods={}, at=POD_APPEAR_GRACE / 2)
    assert not plan.launches and not [e for e in plan.events if e.reason == "Retrying"]
    assert op.records["exp-0000"]["status"]["failures"] == 0
    # Never seen and long gone: the run is lost, and retried.
    plan = op.step(pods={}, at=POD_APPEAR_GRACE * 2)
    assert [(l.trial.name, l.reason) for l in plan.launches] == [("exp-0000", "retry")]


def test_a_pod_that_ended_before_its_last_observations_reached_the_cache_is_judged_on_its_trial_as_read(manifest):
    op = Operator(manifest)
    op.step()
    # The pod's end arrives first: in the cache, the run looks one epoch short. Its trial is read from the
    # API (the sidecar had every append acknowledged before it exited) and the run judged on that.
    ended = {"exp-0000-1": succeeded_pod()}
    assert runs_to_confirm(op.state, ended, {"exp-0000": [(1, 0.5), (2, 0.4)]}, T0 + timedelta(seconds=1),
                           fresh=False) == ToConfirm(["exp-0000"], [])
    plan = op.step({"exp-0000": [(1, 0.5), (2, 0.4), (3, 0.3)]}, ended, at=timedelta(seconds=1))
    status = op.records["exp-0000"]["status"]
    assert (status["phase"], status["failures"]) == ("Completed", 0)
    assert [(l.trial.name, l.reason) for l in plan.launches] == [("exp-0001", "new")]


def test_only_runs_the_cache_may_not_have_fully_seen_are_read_from_the_api(manifest):
    op = Operator(manifest, parallelism=2)
    op.step()
    done = {"exp-0000-1": succeeded_pod(), "exp-0001-1": succeeded_pod()}
    ended = runs_ended(op.state, done, T0 + timedelta(seconds=1))
    assert ended == ["exp-0000", "exp-0001"]
    # exp-0000's last epoch (3) is cached: nothing left to arrive. exp-0001 looks short: read it.
    cached = {"exp-0000": [(1, 0.5), (2, 0.4), (3, 0.3)], "exp-0001": [(1, 0.5)]}
    assert runs_to_read(op.state, ended, done, cached, T0 + timedelta(seconds=1)) == (["exp-0001"], [])
    # A failed or vanished run is fenced (its sidecar may have died with an append in flight), then
    # judged on what the fencing write returns: its retry starts after its last recorded epoch.
    failed = {"exp-0000-1": {"status": {"phase": "Failed"}, "deleting": False}}
    assert runs_to_read(op.state, ["exp-0000", "exp-0001"], failed, cached, T0) == ([], ["exp-0000", "exp-0001"])


def test_a_rebuilt_operator_fences_the_runs_whose_pods_ended_while_it_was_down(manifest):
    op = Operator(manifest, parallelism=2)
    op.step()
    for name in ("exp-0000", "exp-0001"):
        op.records[name]["status"].update(observations=[{"epoch": 1, "value": 0.5}], runFence=0)
    # Restarted: exp-0000's pod vanished, exp-0001's failed. Their sidecars may have died with an append in
    # flight that lands after the list the rebuild read; both are fenced before they are judged.
    pods = {"exp-0001-1": {"status": {"phase": "Failed"}, "deleting": False}}
    state = ExperimentState.from_trials("exp", op.spec, list(op.records.values()), pods=pods)
    on_list = {"exp-0000": [(1, 0.5)], "exp-0001": [(1, 0.5)]}
    assert runs_to_confirm(state, pods, on_list, T0 + timedelta(seconds=1), fresh=True) == ToConfirm(
        [], ["exp-0000", "exp-0001"])


def test_a_run_whose_pod_ended_is_judged_on_observations_read_after_the_end_without_waiting(manifest):
    op = Operator(manifest, maxRetries=2)
    op.step()
    pods = {"exp-0000-1": running_pod()}
    op.step({"exp-0000": [(1, 0.5)]}, pods, at=timedelta(seconds=1))
    assert runs_ended(op.state, pods, T0 + timedelta(seconds=1)) == []
    # Deleted by hand after epoch 2, which the trials' cache has not delivered yet; the runner fenced
    # the trial and took its observations from that write: the retry resumes after epoch 2, not 1.
    assert runs_ended(op.state, {}, T0 + POD_APPEAR_GRACE * 2) == ["exp-0000"]
    plan = op.step({"exp-0000": [(1, 0.5), (2, 0.4)]}, {}, at=POD_APPEAR_GRACE * 2)
    (retry,) = plan.launches
    assert (retry.reason, retry.start_epoch) == ("retry", 2)
    # An early but clean exit, its trial read from the API: it is a failure at once.
    plan = op.step({"exp-0000": [(1, 0.5), (2, 0.4)]}, {"exp-0000-2": succeeded_pod()},
                   at=POD_APPEAR_GRACE * 2 + timedelta(seconds=1))
    assert [(l.reason, l.start_epoch) for l in plan.launches] == [("retry", 2)]
    assert op.records["exp-0000"]["status"]["failures"] == 2


def test_a_trainer_that_exits_0_short_of_its_epochs_is_a_failure_retried_from_its_last_epoch(manifest):
    op = Operator(manifest, maxRetries=1)
    op.step()
    plan = op.step({"exp-0000": [(1, 0.5)]}, {"exp-0000-1": succeeded_pod()}, at=timedelta(seconds=1))
    retry = [l for l in plan.launches if l.reason == "retry"]
    assert retry and retry[0].start_epoch == 1
    warning = next(e for e in plan.events if e.reason == "Retrying")
    assert "exited 0 after epoch 1, before epoch 3" in warning.message
    assert op.records["exp-0000"]["status"]["failures"] == 1


def test_progress_costs_no_write_and_decisions_are_written_at_once(manifest):
    op = Operator(manifest)
    op.step()
    for seconds in (1, 60, 3600):  # mid-run progress: the sidecar's append already shows it
        plan = op.step({"exp-0000": [(1, 0.5)]}, {"exp-0000-1": running_pod()}, at=timedelta(seconds=seconds))
        assert "exp-0000" not in plan.trial_status
    # The epoch the run was launched to reach is a decision: written in the same step, acknowledging all three.
    plan = op.step({"exp-0000": [(1, 0.5), (2, 0.4), (3, 0.3)]}, {"exp-0000-1": running_pod()},
                   at=timedelta(seconds=3601))
    assert plan.trial_status["exp-0000"]["processed"] == 3
    assert not {"lastEpoch", "lastValue"} & set(plan.trial_status["exp-0000"])  # the sidecar's columns


def test_a_lagging_cache_never_feeds_an_observation_twice(manifest):
    op = Operator(manifest)
    op.step()
    op.step({"exp-0000": [(1, 0.5), (2, 0.4)]}, {"exp-0000-1": running_pod()}, at=timedelta(seconds=1))
    # The cache shows an older version of the trial (one observation): nothing is replayed.
    op.step({"exp-0000": [(1, 0.5)]}, {"exp-0000-1": running_pod()}, at=timedelta(seconds=2))
    trial = op.state.engine.trials[0]
    assert trial.observations == [(1, 0.5), (2, 0.4)]


def test_a_restart_rebuilds_the_same_decisions_from_what_was_written(manifest):
    op = Operator(manifest, maxTrials=3)
    op.step()
    op.step({"exp-0000": [(1, 0.5), (2, 0.4), (3, 0.3)]}, {"exp-0000-1": succeeded_pod()}, at=timedelta(seconds=1))
    for name, record in op.records.items():
        record["status"]["observations"] = [{"epoch": e, "value": v}
                                            for e, v in {"exp-0000": [(1, 0.5), (2, 0.4), (3, 0.3)]}.get(name, [])]
    # A new operator process: everything from the objects; exp-0001's pod runs, exp-0000's was deleted.
    plan = reconcile("exp", op.spec, op.status, list(op.records.values()), {"exp-0001-1": running_pod()},
                     T0 + timedelta(seconds=2))
    assert not plan.launches and not plan.delete_pods  # nothing decided twice
    assert plan.experiment_status["trials"] == op.status["trials"]


def owner_steps(api: RecordingApi, manifest_spec: dict, *steps: Seen, at=T0) -> ExperimentOwner:
    """An owner, as the operator runs it, taking these steps (each waits for its launch batch)."""
    owner = ExperimentOwner(api, "ns", "exp", logging.getLogger("test"), clock=lambda: at)

    async def run():
        for seen in steps:
            await owner.step(seen)
            await owner.settle()
    asyncio.run(run())
    return owner


def experiment_body(spec: dict) -> dict:
    return {**EXPERIMENT, "metadata": {**EXPERIMENT["metadata"], "generation": 1}, "spec": spec, "status": {}}


def launch_then_crash_before_the_pod(manifest, **budget):
    """One trial launched by an owner; the API as an operator killed between its status write and its pod
    left it."""
    op = Operator(manifest, **budget)
    api = RecordingApi()
    api.pod_error = RuntimeError("the operator was killed here")
    owner_steps(api, op.manifest_spec, Seen(experiment_body(op.manifest_spec), {}, {}, {}))
    # The sidecar's records, and the run they are for, exist before its pod: one write.
    assert [c for c in api.calls if c[0] == "status"] == [("status", "exp-0000", True)]
    assert not api.pods
    assert api.created["exp-0000"]["status"]["phase"] == "Running"
    api.calls.clear()
    api.pod_error = None
    return op, api, api.created["exp-0000"]


def rebuild_and_step(op, api, trial):
    """A rebuilt operator's step: fence the ended runs, then judge them."""
    state = ExperimentState.from_trials("exp", op.spec, [trial], pods={})
    assert runs_to_confirm(state, {}, {}, T0 + timedelta(seconds=1), fresh=True).fence == ["exp-0000"]  # no pod
    owner = owner_steps(api, op.manifest_spec, Seen(experiment_body(op.manifest_spec), {}, {}, {}),
                        at=T0 + timedelta(seconds=1))
    return owner.state, [c for c in api.calls if c[:2] == ("create", "Pod")]


def test_a_trial_whose_first_launch_a_crash_cut_short_is_launched_again_as_the_same_attempt(manifest, quiet_kopf):
    op, api, trial = launch_then_crash_before_the_pod(manifest, maxRetries=0)
    state, pods = rebuild_and_step(op, api, trial)
    # Its pod never existed: launched again as attempt 1, with its claim, and no failure counted (with
    # maxRetries 0 a failure would have failed the trial).
    assert pods == [("create", "Pod", "exp-0000-1")]
    assert ("create", "PersistentVolumeClaim", claim_name("exp-0000")) in api.calls
    assert (state.engine.trials[0].failures, state.engine.trials[0].phase) == (0, "Running")


def test_a_run_that_recorded_an_epoch_and_vanished_while_the_operator_was_down_is_a_failure(manifest, quiet_kopf):
    op, api, trial = launch_then_crash_before_the_pod(manifest, maxRetries=1)
    trial["status"]["observations"] = [{"epoch": 1, "value": 0.5, "attempt": 1}]  # its pod ran, then went
    state, pods = rebuild_and_step(op, api, trial)
    assert pods == [("create", "Pod", "exp-0000-2")]
    assert (state.engine.trials[0].failures, state.engine.trials[0].last_epoch) == (1, 1)


def test_a_step_launches_a_bounded_number_of_trials_and_says_when_slots_are_left(manifest):
    op = Operator(manifest, parallelism=2 * LAUNCHES_PER_STEP + 3, maxTrials=100)
    sizes = []
    for i in range(4):
        plan = op.step(at=timedelta(seconds=i))
        sizes.append((len(plan.launches), plan.more_launches))
    assert sizes == [(LAUNCHES_PER_STEP, True), (LAUNCHES_PER_STEP, True), (3, False), (0, False)]


def test_the_last_epoch_of_a_run_records_its_outcome_and_the_pods_exit_writes_nothing_more(manifest):
    op = Operator(manifest)
    op.step()
    running = {"exp-0000-1": running_pod()}
    plan = op.step({"exp-0000": [(1, 0.5), (2, 0.4), (3, 0.3)]}, running, at=timedelta(seconds=1))
    # The trainer is told its run is over and exits; the record says so already.
    assert op.records["exp-0000"]["status"]["phase"] == "Completed"
    assert not plan.launches  # its slot is free only once the pod has ended
    plan = op.step({"exp-0000": [(1, 0.5), (2, 0.4), (3, 0.3)]}, {"exp-0000-1": succeeded_pod()},
                   at=timedelta(seconds=2))
    assert "exp-0000" not in plan.trial_status and "exp-0000-1" in plan.delete_pods
    assert [(l.trial.name, l.reason) for l in plan.launches] == [("exp-0001", "new")]
    assert [e.reason for e in plan.events if e.trial == "exp-0000"] == ["Completed"]


def test_a_rebuild_while_a_settled_runs_pod_exits_keeps_its_slot_and_handles_its_end(manifest):
    op = Operator(manifest)
    op.step()
    op.step({"exp-0000": [(1, 0.5), (2, 0.4), (3, 0.3)]}, {"exp-0000-1": running_pod()}, at=timedelta(seconds=1))
    trial = op.records["exp-0000"]
    trial["status"]["observations"] = [{"epoch": e, "value": v} for e, v in [(1, 0.5), (2, 0.4), (3, 0.3)]]
    assert trial["status"]["phase"] == "Completed"
    # The operator restarts while that pod still exits: no second trial beyond the parallelism of 1.
    state = ExperimentState.from_trials("exp", op.spec, [trial], pods={"exp-0000-1": running_pod()})
    plan = step(state, op.spec, {}, {}, {"exp-0000-1": running_pod()}, T0 + timedelta(seconds=2), fresh=True)
    assert not plan.launches and not plan.delete_pods
    # Its pod ends: deleted, nothing more recorded for it, no failure, the next trial starts.
    plan = step(state, op.spec, {}, {}, {"exp-0000-1": succeeded_pod()}, T0 + timedelta(seconds=3))
    assert "exp-0000-1" in plan.delete_pods and [l.trial.name for l in plan.launches] == ["exp-0001"]
    assert plan.trial_status.get("exp-0000", {}).get("failures", 0) == 0
    assert state.engine.trials[0].phase == "Completed"


def test_new_pods_wait_for_their_claims_where_the_storage_class_binds_at_once(manifest, quiet_kopf):
    """A pod created before its claim is bound is reported unschedulable (a FailedScheduling Warning per new
    trial); a class that binds at the first consumer, or none, is not waited for."""
    for binds in (True, False):
        op = Operator(manifest, parallelism=2)
        api = RecordingApi(binds_at_once=binds)
        owner_steps(api, op.manifest_spec, Seen(experiment_body(op.manifest_spec), {}, {}, {}))
        waits = [c for c in api.calls if c[0] == "wait bound"]
        if not binds:
            assert waits == []
            continue
        assert waits == [("wait bound", ("exp-0000-ckpt", "exp-0001-ckpt"))]
        wait = api.calls.index(waits[0])
        assert all(api.calls.index(("create", "PersistentVolumeClaim", f"exp-000{i}-ckpt")) < wait
                   < api.calls.index(("create", "Pod", f"exp-000{i}-1")) for i in (0, 1))
