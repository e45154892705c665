"""What a user meets when a trial pod cannot start or its trainer fails: where it shows, and how it ends."""

from __future__ import annotations

from datetime import timedelta

from test_controller_reconcile import T0, World

from hpo_operator.controller.pods import compact_pod, pod_problem, run_outcome
from hpo_operator.controller.events import Event, coalesce_events

STAMP = T0.strftime("%Y-%m-%dT%H:%M:%SZ")


def api_pod(phase="Pending", trainer_state=None, sidecar_state=None, scheduled=True, created=STAMP) -> dict:
    """A pod as the API server returns it."""
    statuses = [{"name": name, "state": state} for name, state in (("trainer", trainer_state),
                                                                   ("hpo-metrics", sidecar_state)) if state]
    conditions = [] if scheduled else [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                        "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."}]
    return {"metadata": {"name": "exp-0000-1", "creationTimestamp": created},
            "status": {"phase": phase, "containerStatuses": statuses, "conditions": conditions}}


NEVER_PULLED = {"waiting": {"reason": "ErrImageNeverPull",
                            "message": 'Container image "hpo-trainr:e2e" is not present with pull policy of Never'}}


def test_what_keeps_a_pod_from_starting_is_named_in_kubernetes_words():
    pod = compact_pod(api_pod("Pending", NEVER_PULLED, {"running": {}}))
    assert pod_problem(pod, "trainer") == ("ErrImageNeverPull", NEVER_PULLED["waiting"]["message"], "trainer")
    unschedulable = compact_pod(api_pod(scheduled=False))
    assert pod_problem(unschedulable, "trainer").reason == "Unschedulable"
    pulling = compact_pod(api_pod("Pending", {"waiting": {"reason": "ContainerCreating"}}))
    assert pod_problem(pulling, "trainer") is None  # a slow pull is no problem


def test_a_pod_that_does_not_start_in_time_is_a_failed_run_and_a_slow_one_is_not():
    pod = compact_pod(api_pod("Running", NEVER_PULLED, {"running": {}}))
    assert run_outcome(pod, "trainer", T0 + timedelta(seconds=59), start_timeout=60) is None
    ended = run_outcome(pod, "trainer", T0 + timedelta(seconds=60), start_timeout=60)
    assert not ended.ok and ended.live and "ErrImageNeverPull" in ended.message and "60 s" in ended.message
    started = compact_pod(api_pod("Running", {"running": {}}, {"running": {}}))
    assert run_outcome(started, "trainer", T0 + timedelta(hours=1), start_timeout=60) is None


def test_a_trainer_that_ended_unseen_by_its_sidecar_is_judged_from_its_container():
    finished = (T0 + timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    term = {"terminated": {"exitCode": 2, "reason": "Error", "finishedAt": finished, "message": "bad flag\n"}}
    pod = compact_pod(api_pod("Running", term, {"running": {}}))
    assert run_outcome(pod, "trainer", T0 + timedelta(seconds=20)) is None  # its sidecar may still end it
    ended = run_outcome(pod, "trainer", T0 + timedelta(seconds=40))
    assert (ended.ok, ended.live, ended.output) == (False, True, "bad flag\n")


def test_a_bad_image_shows_on_the_trial_and_experiment_then_fails_it_through_its_budget(manifest):
    manifest["spec"]["scheduler"] = {"algorithm": "fifo", "maxResource": 3}
    world = World(manifest, parallelism=1, maxTrials=2, maxRetries=0, maxFailedTrials=0, startTimeout="2m")
    world.step()
    world.pods["exp-0000-1"] = compact_pod(api_pod("Pending", NEVER_PULLED, {"running": {}}))
    world.now = T0 + timedelta(seconds=10)
    plan = world.step()
    warning = [e for e in plan.events if e.type == "Warning"]
    assert [(e.trial, e.reason) for e in warning] == [("exp-0000", "ErrImageNeverPull")]
    assert "hpo-trainr:e2e" in warning[0].message
    condition = world.trials["exp-0000"]["status"]["conditions"][-1]
    assert (condition["type"], condition["status"], condition["reason"]) == ("PodProblem", "True",
                                                                            "ErrImageNeverPull")
    assert plan.pod_problems == {"exp-0000": ("ErrImageNeverPull", NEVER_PULLED["waiting"]["message"])}
    world.now = T0 + timedelta(seconds=20)
    assert not [e for e in world.step().events if e.type == "Warning"]  # posted once per reason and run

    world.now = T0 + timedelta(minutes=2)
    plan = world.step()
    assert world.status["phase"] == "Failed" and world.status["reason"] == "MaxFailedTrialsReached"
    assert "did not start within 120 s (ErrImageNeverPull" in world.status["message"]
    assert "exp-0000-1" not in world.pods  # a pod that never started is deleted: it holds its node's GPU
    assert world.trials["exp-0000"]["status"]["phase"] == "Failed"


def test_a_failed_runs_output_is_kept_and_its_pod_stays_until_the_trial_runs_again(manifest):
    manifest["spec"]["scheduler"] = {"algorithm": "fifo", "maxResource": 3}
    world = World(manifest, parallelism=1, maxTrials=1, maxRetries=1, maxFailedTrials=5)
    world.step()
    output = "".join(f"line {i}\n" for i in range(400)) + "ValueError: lr must be positive\n"
    term = {"terminated": {"exitCode": 1, "reason": "Error", "message": output[-2048:]}}
    world.pods["exp-0000-1"] = compact_pod(api_pod("Failed", term, {"terminated": {"exitCode": 0}}))
    world.spec = world.spec.model_copy(update={"budget": world.spec.budget.model_copy(update={"parallelism": 0})})
    plan = world.step()  # no free slot: the retry waits
    assert "exp-0000-1" not in plan.delete_pods and "exp-0000-1" in world.pods  # kubectl logs still works
    status = world.trials["exp-0000"]["status"]
    assert status["lastOutput"].endswith("ValueError: lr must be positive") and len(status["lastOutput"]) <= 2048
    retrying = next(e for e in plan.events if e.reason == "Retrying")
    assert "ValueError: lr must be positive" in retrying.message and len(retrying.message) < 1000
    world.spec = world.spec.model_copy(update={"budget": world.spec.budget.model_copy(update={"parallelism": 1})})
    plan = world.step()  # the retry launches: the failed pod goes
    assert "exp-0000-1" in plan.delete_pods and [l.attempt for l in plan.launches] == [2]


def test_failed_and_stopped_trials_lose_their_claims_at_the_end_with_a_stopped_event_each(manifest):
    manifest["spec"]["scheduler"] = {"algorithm": "asha", "maxResource": 9, "minResource": 1,
                                     "reductionFactor": 3, "promoteInPlace": False}
    world = World(manifest, parallelism=3, maxTrials=3, maxRetries=0, maxFailedTrials=5)
    world.step()
    world.report("exp-0000", 0.5)
    world.report("exp-0001", 0.6)
    world.pod_ends("exp-0000")
    world.pod_ends("exp-0001")
    world.pod_ends("exp-0002", "Failed", exit_code=1)
    plans = [world.step()]
    while world.status["phase"] == "Running":
        for name, trial in world.trials.items():
            if trial["status"].get("phase") == "Running":
                world.report(name, 0.1)
                while len(trial["status"]["observations"]) < trial["status"]["until"]:
                    world.report(name, 0.1)
                world.pod_ends(name)
        plans.append(world.step())
    phases = {n: t["status"]["phase"] for n, t in world.trials.items()}
    assert "Failed" in phases.values() and "Stopped" in phases.values(), phases
    deleted = {claim for plan in plans for claim in plan.delete_claims}
    best = world.status["best"]["trial"]
    assert deleted == {f"{n}-ckpt" for n, p in phases.items() if p in ("Stopped", "Failed") and n != best}
    stopped_events = {e.trial for plan in plans for e in plan.events if e.reason == "Stopped"}
    assert stopped_events == {n for n, p in phases.items() if p == "Stopped"}
    assert world.status["progress"] == "3/3"


def test_a_trial_named_twice_in_held_events_is_listed_once_with_its_latest_message():
    events = [Event("t1", "Normal", "PromotedInPlace", "continues to epoch 3"),
              Event("t2", "Normal", "PromotedInPlace", "continues to epoch 3"),
              Event("t1", "Normal", "PromotedInPlace", "continues to epoch 9")]
    (merged,) = coalesce_events(events)
    assert merged.message == "2 trials: t1 (continues to epoch 9); t2 (continues to epoch 3)"
    (single,) = coalesce_events([events[0], events[2]])
    assert (single.trial, single.message) == ("t1", "continues to epoch 9")


def test_a_cleared_pod_problem_condition_keeps_a_message():
    # The 1.20 API server takes "" in a custom resource's status for null and refuses the whole write.
    from hpo_operator.controller.status import pod_problem_conditions

    (cleared,) = pod_problem_conditions([], None, T0)
    (raised,) = pod_problem_conditions([], ("CreateContainerError", ""), T0)
    assert cleared["status"] == "False" and cleared["message"] and raised["message"] == "CreateContainerError"
