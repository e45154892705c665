"""Status of ``HPOExperiment`` and spec/status of ``HPOTrial``, as written by the operator and the sidecar."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from hpo_operator.resources import ExperimentPhase, TrialPhase
from hpo_operator.spec.base import SpecModel

# What a cluster experiment can be in (ExperimentPhase.INTERRUPTED is `hpo run`'s alone).
ClusterExperimentPhase = Literal[ExperimentPhase.PENDING, ExperimentPhase.RUNNING, ExperimentPhase.SUCCEEDED,
                                 ExperimentPhase.FAILED]


class Condition(SpecModel):
    model_config = SpecModel.model_config | {"frozen": False}
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: Optional[str] = None
    observed_generation: Optional[int] = None


class TrialCounts(SpecModel):
    created: int = 0
    pending: int = 0
    running: int = 0
    paused: int = 0
    stopped: int = 0
    completed: int = 0
    failed: int = 0


class BestTrial(SpecModel):
    trial: str
    config: dict[str, Any] = Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    value: Optional[float] = None
    epoch: int = 0
    complete: bool = Field(default=False, description="Trained to maxResource.")
    checkpoint: Optional[str] = Field(default=None, description="Claim and path of the best trial's checkpoints.")


class HPOExperimentStatus(SpecModel):
    phase: ClusterExperimentPhase = ExperimentPhase.PENDING
    reason: Optional[str] = None
    message: Optional[str] = None
    conditions: list[Condition] = Field(default_factory=list, description="Succeeded; PodProblem: True with "
                                        "Kubernetes' reason and message while a trial's pod cannot start.")
    trials: TrialCounts = Field(default_factory=TrialCounts)
    best: Optional[BestTrial] = None
    best_value: Optional[str] = Field(default=None, description="Best objective as text, for kubectl columns.")
    progress: Optional[str] = Field(default=None, description="Trials ended (Stopped, Completed or Failed) / "
                                    "maxTrials, for kubectl columns.")
    start_time: Optional[str] = None
    completion_time: Optional[str] = None
    observed_generation: Optional[int] = None
    accepted_spec: Optional[dict[str, Any]] = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="The spec fields fixed when the experiment started (objective, searchSpace, searcher, "
        "scheduler, checkpoints) and the maxTrials in effect; changes to them are refused while it runs.")


class Observation(SpecModel):
    epoch: int = Field(ge=1)
    value: Optional[float] = Field(default=None, description="Objective; null when NaN or infinite (ranks worst).")
    attempt: Optional[int] = Field(default=None, ge=1, description="The run (pod attempt) that reported it.")
    time: Optional[float] = Field(default=None, description="Unix time (seconds) the trainer wrote the epoch; "
                                  "hpo plot draws the best value against it.")


class Problem(SpecModel):
    reason: str = Field(description="What went wrong, e.g. not_json, missing_objective, epochs_repeated.")
    message: str = Field(default="", description="What a user can do about it; a short excerpt of a bad line.")
    attempt: Optional[int] = Field(default=None, ge=1, description="The run (pod attempt) that found it.")


class HPOTrialSpec(SpecModel):
    experiment: str
    trial_id: int = Field(ge=0)
    bracket: int = Field(default=0, ge=0)
    config: dict[str, Any] = Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    granted: int = Field(default=0, ge=0, description=(
        "Epoch the scheduler granted the trial when it was created (its first run's until). A trial whose "
        "launch was never recorded (the operator stopped between creating it and its first status write) "
        "is launched to it after a restart."))


class HPOTrialStatus(SpecModel):
    phase: TrialPhase = TrialPhase.PENDING
    until: int = Field(default=0, description="Epoch the current or next run trains to.")
    last_epoch: int = 0
    last_value: Optional[str] = Field(default=None, description="Latest objective as text, for kubectl columns.")
    observations: list[Observation] = Field(default_factory=list)
    problems: list[Problem] = Field(
        default_factory=list, description="Appended by the sidecar, once per reason per run; each becomes a Warning Event.")
    problems_posted: int = Field(default=0, description="How many of the problems the operator has posted as Events.")
    run_fence: int = Field(default=0, description="Raised by the operator when it judges a run over that may still "
                           "have writes in flight (its pod failed or vanished); the sidecar's appends require "
                           "the value they started with, so none of that run lands afterwards.")
    attempts: int = 0
    failures: int = 0
    pod: Optional[str] = None
    checkpoint: Optional[str] = None
    message: Optional[str] = None
    last_output: Optional[str] = Field(default=None, description="The last lines (up to 2 KiB) the trainer of the "
                                       "trial's last failed run wrote, as the kubelet kept them.")
    conditions: list[Condition] = Field(default_factory=list, description="PodProblem: True with Kubernetes' "
                                        "reason and message once the trial's pod could not start.")
