"""One reconcile step as a pure function: trials and pods in, a plan out.

``World`` holds the objects as plain dicts and applies each plan the way
``controller.actions`` does, each step from scratch (as after a restart), so
several steps can be chained without an API server (the integration tier runs
the same code against a real one).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hpo_operator.controller.builders import build_trial
from hpo_operator.controller.reconcile import Plan, step
from hpo_operator.controller.state import ExperimentState, problems_of
from hpo_operator.controller.trials import observations_of
from hpo_operator.sidecar.reporter import observation_patch
from hpo_operator.spec import experiment_spec_from_dict
from hpo_trainer.metrics import MetricRecord
from support.status_patch import apply_adds

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
EXPERIMENT = {"apiVersion": "hpo.dev/v1alpha1", "kind": "HPOExperiment",
              "metadata": {"name": "exp", "namespace": "ns", "uid": "u"}}


def reconcile(name: str, spec, status: dict, trial_objs: list[dict], pods: dict[str, dict], now: datetime) -> Plan:
    """One step from scratch: rebuild from the objects, act, and bring every trial's status up to date."""
    state = ExperimentState.from_trials(name, spec, trial_objs, pods=pods)
    observations = {o["metadata"]["name"]: observations_of(o) for o in trial_objs}
    problems = {o["metadata"]["name"]: problems_of(o) for o in trial_objs}
    return step(state, spec, status, observations, pods, now, fresh=True, problems=problems)


class World:
    def __init__(self, manifest: dict, **budget):
        manifest["spec"]["budget"] = {"parallelism": 2, "maxTrials": 4, **budget}
        self.spec = experiment_spec_from_dict(manifest["spec"])
        self.status: dict = {}
        self.trials: dict[str, dict] = {}
        self.pods: dict[str, dict] = {}
        self.now = T0

    def step(self):
        plan = reconcile("exp", self.spec, self.status, list(self.trials.values()), self.pods, self.now)
        for pod in plan.delete_pods:
            self.pods.pop(pod, None)
        for launch in plan.launches:
            name = launch.trial.name
            if name not in self.trials:
                self.trials[name] = build_trial(EXPERIMENT, launch.trial)
                self.trials[name]["status"] = {"observations": [], "processed": 0}
            self.pods[f"{name}-{launch.attempt}"] = {"status": {"phase": "Running"}}
        for name, patch in plan.trial_status.items():
            self.trials[name]["status"].update(patch)
        self.status = plan.experiment_status
        return plan

    def report(self, trial: str, *values) -> None:
        """The sidecar's part: its patch (``observation_patch``) for each epoch after those on record."""
        status = self.trials[trial]["status"]
        for v in values:
            record = MetricRecord(len(status["observations"]) + 1, "val_error", float("nan") if v is None else v)
            apply_adds(status, observation_patch(record))

    def pod_ends(self, trial: str, phase: str = "Succeeded", exit_code: int = 0) -> None:
        pod = self.trials[trial]["status"]["pod"]
        state = {"terminated": {"exitCode": exit_code, "reason": "Error" if exit_code else "Completed"}}
        self.pods[pod] = {"status": {"phase": phase, "containerStatuses": [{"name": "trainer", "state": state}]}}


def test_first_step_fills_parallelism_with_new_trials(manifest):
    world = World(manifest)
    plan = world.step()
    assert [(l.trial.name, l.reason, l.attempt) for l in plan.launches] == [("exp-0000", "new", 1),
                                                                           ("exp-0001", "new", 1)]
    assert world.status["phase"] == "Running" and world.status["trials"]["running"] == 2
    assert {e.reason for e in plan.events} == {"Started"}


def test_each_observation_is_acted_on_once(manifest):
    world = World(manifest)
    world.step()
    world.report("exp-0000", 0.5)
    world.step()
    assert world.trials["exp-0000"]["status"]["processed"] == 1
    again = world.step()  # nothing new: no decision, no status write for the trial
    assert "exp-0000" not in again.trial_status and not again.launches
    assert world.trials["exp-0000"]["status"]["lastValue"] == "0.5"


def test_a_crashed_pod_is_retried_from_its_last_epoch_and_then_counted_failed(manifest):
    manifest["spec"]["scheduler"] = {"algorithm": "fifo", "maxResource": 9}
    world = World(manifest, maxRetries=1, maxFailedTrials=5)
    world.step()
    world.report("exp-0000", 0.9, 0.8)
    world.pod_ends("exp-0000", "Failed", exit_code=137)
    plan = world.step()
    retry = next(l for l in plan.launches if l.trial.name == "exp-0000")
    assert (retry.reason, retry.attempt, retry.start_epoch) == ("retry", 2, 2)
    assert "exp-0000-1" not in world.pods and "exp-0000-2" in world.pods
    warning = next(e for e in plan.events if e.reason == "Retrying")
    assert "trainer exited 137" in warning.message
    world.pod_ends("exp-0000", "Failed", exit_code=1)
    world.step()
    status = world.trials["exp-0000"]["status"]
    assert (status["phase"], status["failures"]) == ("Failed", 2)
    assert world.status["trials"]["failed"] == 1


def test_a_deleted_pod_counts_as_a_failed_run(manifest):
    manifest["spec"]["scheduler"] = {"algorithm": "fifo", "maxResource": 9}
    world = World(manifest, maxRetries=2)
    world.step()
    del world.pods["exp-0001-1"]
    plan = world.step()
    assert any(l.trial.name == "exp-0001" and l.reason == "retry" for l in plan.launches)
    warning = next(e for e in plan.events if e.reason == "Retrying")
    assert warning.trial == "exp-0001" and "deleted or evicted" in warning.message
    assert world.trials["exp-0001"]["status"]["failures"] == 1


def test_a_nan_metric_is_recorded_and_ranks_worst(manifest):
    manifest["spec"]["scheduler"] = {"algorithm": "fifo", "maxResource": 1}
    world = World(manifest)
    world.step()
    world.report("exp-0000", None)  # the sidecar writes NaN as null
    world.report("exp-0001", 0.7)
    world.pod_ends("exp-0000")
    world.pod_ends("exp-0001")
    world.step()
    assert world.trials["exp-0000"]["status"]["lastValue"] == "NaN"
    assert world.status["best"]["trial"] == "exp-0001"


def test_max_duration_stops_running_pods_and_ends_the_experiment(manifest):
    manifest["spec"]["scheduler"] = {"algorithm": "fifo", "maxResource": 9}
    world = World(manifest, maxDuration="1h")
    world.step()
    world.report("exp-0000", 0.4)
    world.step()
    world.now = T0 + timedelta(hours=1, seconds=1)
    plan = world.step()
    assert set(plan.delete_pods) == {"exp-0000-1", "exp-0001-1"} and not plan.launches
    assert (world.status["phase"], world.status["reason"]) == ("Succeeded", "MaxDurationReached")
    assert world.status["best"]["trial"] == "exp-0000" and not world.status["best"]["complete"]
    # Both trials end Stopped; the best one's checkpoint stays, the other's claim goes.
    assert {t: world.trials[t]["status"]["phase"] for t in world.trials} == {"exp-0000": "Stopped",
                                                                            "exp-0001": "Stopped"}
    assert plan.delete_claims == {"exp-0001-ckpt": "exp-0001"}


def _stopped_by_max_duration(manifest, **checkpoints):
    manifest["spec"]["scheduler"] = {"algorithm": "fifo", "maxResource": 9}
    manifest["spec"]["checkpoints"] = checkpoints
    world = World(manifest, maxDuration="1h")
    world.step()
    world.report("exp-0000", 0.4)
    world.step()
    world.now = T0 + timedelta(hours=1, seconds=1)
    return world, world.step()


def test_keep_checkpoints_keeps_every_stopped_trials_claim(manifest):
    world, plan = _stopped_by_max_duration(manifest, keepCheckpoints=True)
    assert world.status["reason"] == "MaxDurationReached" and set(plan.delete_pods) == {"exp-0000-1", "exp-0001-1"}
    assert plan.delete_claims == {}


def test_a_shared_claim_is_never_deleted_with_a_stopped_trial(manifest):
    world, plan = _stopped_by_max_duration(manifest, storage="shared", claimName="team-ckpt")
    assert world.status["reason"] == "MaxDurationReached" and plan.delete_claims == {}
    assert world.status["best"]["checkpoint"] == "team-ckpt:exp/exp-0000"


def test_mode_max_ranks_the_highest_value_best(manifest):
    manifest["spec"]["objective"] = {"metric": "accuracy", "mode": "max"}
    manifest["spec"]["scheduler"] = {"algorithm": "fifo", "maxResource": 1}
    world = World(manifest, maxTrials=3, parallelism=3)
    world.step()
    for trial, value in (("exp-0000", 0.5), ("exp-0001", 0.9), ("exp-0002", 0.1)):
        world.report(trial, value)
        world.pod_ends(trial)
    world.step()
    assert world.status["phase"] == "Succeeded"
    assert (world.status["best"]["trial"], world.status["best"]["value"]) == ("exp-0001", 0.9)


def test_budget_exhausted_experiment_succeeds_and_drops_stopped_trials_checkpoints(manifest):
    manifest["spec"]["scheduler"] = {"algorithm": "asha", "type": "stopping", "maxResource": 3,
                                     "reductionFactor": 3}
    world = World(manifest, maxTrials=3, parallelism=3)
    world.step()
    for trial, value in (("exp-0000", 0.9), ("exp-0001", 0.1), ("exp-0002", 0.5)):
        world.report(trial, value)
    plan = world.step()
    stopped = [e.trial for e in plan.events if e.reason == "Stopped"]
    assert stopped  # at least one trial stopped at the first rung, and its pod deleted
    assert all(f"{t}-1" in plan.delete_pods for t in stopped)
    for trial in world.trials:
        if world.trials[trial]["status"]["phase"] == "Running":
            world.report(trial, *[0.05] * (3 - len(world.trials[trial]["status"]["observations"])))
            world.pod_ends(trial)
    final = world.step()
    assert world.status["phase"] == "Succeeded" and world.status["best"]["complete"]
    best = world.status["best"]["trial"]
    assert set(final.delete_claims) == {f"{t}-ckpt" for t in stopped if t != best}


def test_each_problem_the_sidecar_records_becomes_one_warning_event_even_across_restarts(manifest):
    world = World(manifest)
    world.step()
    problems = world.trials["exp-0000"]["status"].setdefault("problems", [])
    problems += [{"reason": "not_json", "message": "not_json: line is not JSON", "attempt": 1},
                 {"reason": "epochs_repeated", "message": "this run trained 3 epoch(s) again", "attempt": 1}]
    plan = world.step()
    warnings = [(e.trial, e.reason, e.message) for e in plan.events if e.type == "Warning"]
    assert warnings == [("exp-0000", "BadMetricsLine", "run 1: not_json: line is not JSON"),
                        ("exp-0000", "EpochsRepeated", "run 1: this run trained 3 epoch(s) again")]
    assert plan.trial_status["exp-0000"]["problemsPosted"] == 2
    # The count is in the trial's status: a later step (or a restarted operator) posts none again...
    assert not [e for e in world.step().events if e.type == "Warning"]
    # ...and only the next new problem.
    problems.append({"reason": "metrics_file_truncated", "message": "truncated", "attempt": 2})
    assert [(e.reason, e.message) for e in world.step().events if e.type == "Warning"] == [
        ("BadMetricsFile", "run 2: truncated")]


def test_a_malformed_problem_entry_is_still_announced_and_counted(manifest):
    world = World(manifest)
    world.step()
    world.trials["exp-0001"]["status"]["problems"] = ["garbage", {"reason": "not_utf8"}]
    plan = world.step()
    assert [(e.trial, e.reason) for e in plan.events if e.type == "Warning"] == [("exp-0001", "BadMetricsLine")] * 2
    assert plan.trial_status["exp-0001"]["problemsPosted"] == 2


def test_a_rebuild_deletes_the_pods_no_run_uses(manifest):
    # The operator records why a pod goes before it deletes the pod, and may stop in between.
    manifest["spec"]["scheduler"] = {"algorithm": "fifo", "maxResource": 9}
    world = World(manifest, parallelism=3)
    world.step()
    world.trials["exp-0000"]["status"].update(phase="Stopped", message="stopped by the scheduler")
    world.trials["exp-0001"]["status"].update(attempts=2, pod="exp-0001-2")  # a retry of a run whose pod stayed
    world.pods["exp-0001-2"] = {"status": {"phase": "Running"}}
    world.pods["exp-0002-1"]["deleting"] = True  # on its way out already
    world.trials["exp-0002"]["status"].update(phase="Stopped")
    plan = world.step()
    assert set(plan.delete_pods) == {"exp-0000-1", "exp-0001-1"}
    assert {"exp-0001-2"} <= set(world.pods)  # the run in progress keeps its pod


def test_a_trial_created_but_never_launched_runs_to_its_grant_after_a_restart(manifest):
    # The operator died between creating exp-0001 and its launch status write: the trial object has
    # records but no phase or until, and no pod. The rebuild must run it, not take it as a finished run.
    manifest["spec"]["scheduler"] = {"algorithm": "asha", "maxResource": 9, "minResource": 1}
    world = World(manifest)
    world.step()
    assert world.trials["exp-0001"]["spec"]["granted"] == 1
    world.trials["exp-0001"]["status"] = {"observations": [], "processed": 0}
    world.pods.pop("exp-0001-1")
    plan = world.step()
    assert [(l.trial.name, l.start_epoch, l.until, l.attempt) for l in plan.launches] == [("exp-0001", 0, 1, 1)]
    assert world.trials["exp-0001"]["status"]["phase"] == "Running"
    world.report("exp-0001", 0.5)
    world.pod_ends("exp-0001")
    world.step()
    assert world.trials["exp-0001"]["status"]["phase"] == "Paused"
    assert world.trials["exp-0001"]["status"]["lastEpoch"] == 1
