"""Every status field the operator and the sidecar write (and the sidecar reads) is in the CRDs' status schema.

The status schemas carry no x-kubernetes-preserve-unknown-fields: the API server
prunes any field they lack, silently. So each write is checked here against the
schema the CRDs are generated with, field by field as the API server prunes.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from hpo_operator.controller import actions
from hpo_operator.controller.status import experiment_status, experiment_status_patch, pod_problem_conditions, set_condition
from hpo_operator.controller.spec_changes import review
from hpo_operator.controller.trials import OPERATOR_FIELDS, read_trial, status_of
from hpo_operator.engine import ExperimentEngine, TrialState
from hpo_operator.resources import TrialPhase
from hpo_operator.sidecar.reporter import Sidecar
from hpo_operator.spec import experiment_spec_from_dict
from hpo_operator.spec.crd import experiment_crd, trial_crd
from hpo_trainer.metrics import MetricsWriter
from support.status_patch import apply_adds

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def status_schema(crd: dict) -> dict:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]


TRIAL, EXPERIMENT = status_schema(trial_crd()), status_schema(experiment_crd())


def pruned(data, schema: dict, path: str = "/status") -> list[str]:
    """The paths of ``data`` the API server would drop under ``schema`` (structural pruning)."""
    if isinstance(data, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return []
        props = schema.get("properties") or {}
        return [p for key, value in data.items()
                for p in ([f"{path}/{key}"] if key not in props else pruned(value, props[key], f"{path}/{key}"))]
    if isinstance(data, list):
        return [p for i, item in enumerate(data) for p in pruned(item, schema.get("items") or {}, f"{path}/{i}")]
    return []


def at(schema: dict, pointer: str) -> dict:
    """The schema of a JSON-patch path (``/status/observations/-``); KeyError for one the schema lacks."""
    node = {"properties": {"status": schema}}
    for part in pointer.strip("/").split("/"):
        node = node["items"] if part == "-" or part.isdigit() else node["properties"][part]
    return node


def test_the_pruning_check_itself_finds_a_missing_field():
    assert pruned({"phase": "Running", "procesed": 3, "conditions": [{"type": "X", "colour": "red"}]}, TRIAL) == [
        "/status/procesed", "/status/conditions/0/colour"]


@pytest.fixture
def spec(manifest):
    return experiment_spec_from_dict(manifest["spec"])


def trial_state(**kw) -> TrialState:
    return TrialState(3, "exp-0003", {"lr": 0.01}, phase=TrialPhase.PAUSED, until=9,
                      observations=[(1, 0.5), (3, 0.4), (9, 0.3)], attempts=2, failures=1, message="retry 1/3", **kw)


def test_every_trial_status_field_the_operator_writes_is_in_the_schema():
    written = status_of(trial_state(), processed=3, pod="exp-0003-2", decided_epoch=9, checkpoint="exp-0003-ckpt:/")
    written.update(problemsPosted=1, runFence=2, lastOutput="Traceback ...",
                   conditions=pod_problem_conditions(None, ("ErrImagePull", "no such image"), NOW))
    assert set(OPERATOR_FIELDS) >= set(written)
    assert pruned(written, TRIAL) == []
    assert pruned({key: None for key in OPERATOR_FIELDS}, TRIAL) == []
    assert pruned(actions.EMPTY_RECORDS, TRIAL) == []  # a new trial's records, before its first pod


def test_a_trial_status_the_operator_wrote_reads_back_the_same():
    state = trial_state()
    written = json.loads(json.dumps(status_of(state, 3, "exp-0003-2", 9, "exp-0003-ckpt:/")))
    written["observations"] = [{"epoch": e, "value": v, "attempt": 1} for e, v in state.observations]
    view = read_trial({"metadata": {"name": state.name}, "spec": {"trialId": 3, "config": state.config},
                       "status": written})
    assert (view.state, view.processed, view.pod, view.decided_epoch) == (state, 3, "exp-0003-2", 9)


def test_every_experiment_status_field_the_operator_writes_is_in_the_schema(spec):
    engine = ExperimentEngine("exp", spec)
    engine.restore([trial_state(), TrialState(4, "exp-0004", {"lr": 0.1}, until=1)])
    outcome = SimpleNamespace(phase="Succeeded", reason="BudgetExhausted", message="done")
    written = experiment_status(engine, spec, "exp", {}, "2026-01-02T03:00:00Z", NOW, outcome, engine.best())
    assert {"best", "bestValue", "completionTime", "trials"} <= set(written)  # the check below sees them all
    written["observedGeneration"] = 2
    written["conditions"] = set_condition({}, "Succeeded", "True", "BudgetExhausted", "done", 2)
    review(spec, {"objective": {"metric": "other"}}, 2).record(written, {}, 2)
    assert {"acceptedSpec", "conditions"} <= set(written)
    assert pruned(json.loads(json.dumps(written)), EXPERIMENT) == []
    # What the owner sends is that, through the model, unchanged.
    assert experiment_status_patch(written) == json.loads(json.dumps(written))


def test_an_experiment_status_field_the_schema_lacks_is_refused_before_it_is_written():
    with pytest.raises(ValueError, match="runningTrials"):
        experiment_status_patch({"phase": "Running", "runningTrials": 3})


class RecordedStatus(dict):
    """A trial's status that notes every field read from it."""

    def __init__(self, doc: dict, reads: set):
        super().__init__(doc)
        self.reads = reads

    def get(self, key, default=None):
        self.reads.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.reads.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.reads.add(key)
        return super().__contains__(key)


def test_every_status_field_the_sidecar_reads_and_writes_is_in_the_schema(tmp_path):
    doc = {"observations": [], "problems": [], "problemsPosted": 0, "runFence": 0, "until": 2, "decidedEpoch": 0}
    reads, patches = set(), []

    def append(patch: list[dict]) -> dict:
        patches.append(patch)
        apply_adds(doc, patch)
        doc["decidedEpoch"] = max(o["epoch"] for o in doc["observations"])  # the operator's answer, at once
        return RecordedStatus(json.loads(json.dumps(doc)), reads)

    metrics = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(metrics)
    writer.write(epoch=1, val_error=0.5)
    writer.write(epoch=2, val_error=0.4)
    with open(metrics, "a") as f:
        f.write("not json\n")
    polls = iter(range(100))
    Sidecar(metrics, tmp_path / "control.json", "val_error", lambda: RecordedStatus(json.loads(json.dumps(doc)), reads),
            append, trainer_done=lambda: next(polls) >= 2, poll_seconds=0, retry_seconds=0, attempt=1,
            run_fence=0).run(deadline=None)
    ops = [op for patch in patches for op in patch]
    assert {op["path"] for op in ops} == {"/status/runFence", "/status/observations/-", "/status/problems/-",
                                          "/status/lastEpoch", "/status/lastValue"}
    for op in ops:
        assert pruned(op["value"], at(TRIAL, op["path"]), op["path"]) == [], op
    assert {"observations", "problems", "runFence", "until", "decidedEpoch"} <= reads
    assert reads <= set(TRIAL["properties"]), reads - set(TRIAL["properties"])
