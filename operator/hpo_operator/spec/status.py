"""Status of ``HPOExperiment`` and spec/status of ``HPOTrial``, as written by the operator and the sidecar.

The CRDs' status schemas are generated from these models without
``x-kubernetes-preserve-unknown-fields``, so the API server keeps exactly the
fields named here and drops any other: every field the operator or the sidecar
writes must be one of them (tests/unit/test_status_schema.py holds the code to it).
Reading is lenient (``extra="ignore"``): an object written by another version
still parses.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import ConfigDict, Field, field_validator
from typing_extensions import NotRequired, TypedDict

from hpo_operator.resources import ExperimentPhase, TrialPhase
from hpo_operator.spec.base import SpecModel

# What a cluster experiment can be in (ExperimentPhase.INTERRUPTED is `hpo run`'s alone).
ClusterExperimentPhase = Literal[ExperimentPhase.PENDING, ExperimentPhase.RUNNING, ExperimentPhase.SUCCEEDED,
                                 ExperimentPhase.FAILED]


class StatusModel(SpecModel):
    """A status record: unknown fields ignored when reading (the API server has already pruned them)."""

    model_config = SpecModel.model_config | {"extra": "ignore"}


class Condition(StatusModel):
    model_config = StatusModel.model_config | {"frozen": False}
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: Optional[str] = None
    observed_generation: Optional[int] = None


class TrialCounts(StatusModel):
    created: int = 0
    pending: int = 0
    running: int = 0
    paused: int = 0
    stopped: int = 0
    completed: int = 0
    failed: int = 0


class BestTrial(StatusModel):
    trial: str
    config: dict[str, Any] = Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    value: Optional[float] = None
    epoch: int = 0
    complete: bool = Field(default=False, description="Trained to maxResource.")
    checkpoint: Optional[str] = Field(default=None, description="Claim and path of the best trial's checkpoints.")


class HPOExperimentStatus(StatusModel):
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


# One epoch the sidecar recorded. A typed dict, not a model: a rebuild reads every trial's observations
# (hundreds of thousands at 10,000 trials), and validating dicts takes about half the time of building models.
class Observation(TypedDict):
    __pydantic_config__ = ConfigDict(extra="ignore")  # type: ignore[misc]
    epoch: Annotated[int, Field(ge=1)]
    value: NotRequired[Annotated[Optional[float], Field(
        description="Objective; null when NaN or infinite (ranks worst).")]]
    attempt: NotRequired[Annotated[Optional[int], Field(ge=1, description="The run (pod attempt) that reported it.")]]
    time: NotRequired[Annotated[Optional[float], Field(
        description="Unix time (seconds) the trainer wrote the epoch; hpo plot draws the best value against it.")]]


class Problem(StatusModel):
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


class HPOTrialStatus(StatusModel):
    phase: TrialPhase = TrialPhase.PENDING
    until: Optional[int] = Field(default=None, ge=0, description="Epoch the current or next run trains to (none "
                                 "yet: the spec's granted).")
    processed: int = Field(default=0, ge=0, description="How many of the observations the operator has fed to the "
                           "scheduler, so that after a restart each is acted on exactly once.")
    decided_epoch: int = Field(default=0, ge=0, description="The epoch of the operator's latest decision; the "
                               "sidecar hands it with until to a trainer waiting at that epoch (promote in place).")
    last_epoch: Optional[int] = Field(default=None, ge=0, description=(
        "Latest epoch reported, for kubectl columns (the sidecar writes it with each observation)."))
    last_value: Optional[str] = Field(default=None, description=(
        "Latest objective as text, for kubectl columns (the sidecar writes it with each observation)."))
    observations: Optional[list[Observation]] = Field(default=None, description=(
        "Appended by the sidecar, one per epoch. Written empty by the operator before the trial's first pod: "
        "absent means the sidecar has nothing to append to yet."))
    problems: Optional[list[Problem]] = Field(
        default=None, description="Appended by the sidecar, once per reason per run; each becomes a Warning Event.")

    @field_validator("problems", mode="before")
    @classmethod
    def _unknown_problem(cls, problems):
        # Only a hand-edited record can hold a non-object entry (the schema requires objects); it reads as an
        # unknown problem, as the operator announces it, so one bad entry never stops the trial's experiment.
        if isinstance(problems, list):
            return [p if isinstance(p, dict) else {"reason": "unknown", "message": str(p)} for p in problems]
        return problems
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
