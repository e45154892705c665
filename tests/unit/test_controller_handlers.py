"""What the operator asks of kopf for each watch event: no diff base (no handler compares objects), and an
experiment loop of its own per running experiment, started and cancelled from the experiments' events
(no kopf daemon, so no finalizer that an uninstalled operator would leave behind)."""

from __future__ import annotations

import asyncio

import kopf

from hpo_operator.controller import handlers


def body(kind: str, phase: str = "Running", finalizers=()) -> kopf.Body:
    return kopf.Body({
        "apiVersion": "hpo.dev/v1alpha1" if kind.startswith("HPO") else "v1", "kind": kind,
        "metadata": {"name": "x", "namespace": "ns", "labels": {"app": "a"}, "finalizers": list(finalizers)},
        "spec": {"experiment": "exp"}, "status": {"phase": phase,
                                                  "observations": [{"epoch": e, "value": 0.5} for e in range(1, 28)]},
    })


def test_no_object_gets_a_diff_base():
    storage = handlers.NoDiffBaseStorage(prefix="hpo.dev")
    for kind in ("HPOExperiment", "HPOTrial", "Pod"):
        assert storage.build(body=body(kind)) == {}


def test_a_running_experiment_gets_one_loop_which_its_deletion_cancels(monkeypatch):
    started = []

    async def loop_forever(key, logger, reports, pods):
        started.append(key)
        await asyncio.Event().wait()

    monkeypatch.setattr(handlers, "run_experiment", loop_forever)

    async def event(type_, obj):
        patch = kopf.Patch()
        await handlers.experiment_event(type=type_, body=obj, meta=obj["metadata"], name="x", namespace="ns",
                                  patch=patch, logger=None, trial_reports={}, trial_pods={})
        return patch

    async def scenario():
        patch = await event(None, body("HPOExperiment", finalizers=["hpo.dev/finalizer", "other"]))
        assert patch["metadata"]["finalizers"] == ["other"]  # an earlier version's finalizer goes
        await event("MODIFIED", body("HPOExperiment"))
        await asyncio.sleep(0)
        assert started == [("ns", "x")]  # one loop, however many events
        task = handlers._runs[("ns", "x")]
        await event("DELETED", body("HPOExperiment"))
        await asyncio.sleep(0)
        assert task.cancelled() and ("ns", "x") not in handlers._runs
        await event(None, body("HPOExperiment", phase="Succeeded"))
        await asyncio.sleep(0)
        assert started == [("ns", "x")] and ("ns", "x") not in handlers._runs  # a finished one gets none

    asyncio.run(scenario())


def test_the_event_handlers_success_line_is_not_logged_and_its_failures_are():
    import logging

    registry = kopf.get_default_registry()
    handler = next(h for h in registry._watching.get_all_handlers() if h.id == "experiment_event")
    quiet = handlers.QuietEventHandler()
    line = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, f"{handler} succeeded.", (), None)
    failure = logging.LogRecord("kopf.objects", logging.ERROR, __file__, 1, f"{handler} failed with an exception.",
                                (), None)
    assert not quiet.filter(line) and quiet.filter(failure)


def test_the_trials_index_hands_the_loop_each_epochs_time():
    """The live path (kopf's index of the trials' statuses), not only a rebuild, gives the gp its
    epoch times: a run's first epoch is untimed, the next ones take the gap since the one before."""
    status = {"observations": [{"epoch": 1, "value": 0.9, "attempt": 1, "time": 10.0},
                               {"epoch": 2, "value": 0.8, "attempt": 1, "time": 12.5},
                               {"epoch": 3, "value": 0.7, "attempt": 2, "time": 90.0}]}
    index = handlers.trial_reports(namespace="ns", name="exp-t0", labels={handlers.LABEL_EXPERIMENT: "exp"},
                                   status=status)
    assert index == {("ns", "exp"): ("exp-t0", ((1, 0.9, None), (2, 0.8, 2.5), (3, 0.7, None)), ())}
