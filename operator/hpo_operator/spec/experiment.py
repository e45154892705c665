"""The ``HPOExperiment`` manifest: objective, search space, searcher, scheduler,
budget, trial template, checkpoints.

A minimal manifest needs only the objective metric, a search space, the
scheduler's ``maxResource`` and a trial template; everything else has a
default chosen to be what most users want.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from hpo_operator import resources
from hpo_operator.rank_agreement import MIN_AGREEMENT
from hpo_operator.spec.base import SpecModel
from hpo_operator.spec.durations import parse_duration
from hpo_operator.spec.pod_security import security_problem
from hpo_operator.spec.search_space import Domain

GROUP_VERSION = resources.API_VERSION  # kept for the modules that import it from here

# Trial names are "<experiment>-<index:04d>" and pod names add "-<attempt>";
# both must stay valid label values (63 characters).
MAX_EXPERIMENT_NAME = 45
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
PARAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")
METRIC_RE = PARAM_RE
QUANTITY_RE = re.compile(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[numkKMGTPE]i?|)$")


class Objective(SpecModel):
    metric: str = Field(description="Name of the metric the trainer reports, e.g. val_error.",
                        min_length=1, max_length=63)
    mode: Literal["min", "max"] = Field(default="min", description="Minimize or maximize the metric.")

    @field_validator("metric")
    @classmethod
    def _metric_name(cls, v: str) -> str:
        if not METRIC_RE.match(v):
            raise ValueError(f"must be a metric name of letters, digits, '_', '.', '-' starting with a letter or '_' (got {v!r})")
        return v


class SearcherSpec(SpecModel):
    algorithm: Literal["random", "grid", "kde", "gp"] = Field(
        default="gp",
        description="How new configurations are chosen. random; grid; gp (the default): Gaussian process over "
        "configuration and epoch (MOBSTER), picking the largest expected improvement at maxResource per second of "
        "training (a second GP learns epoch times from the trials; the seconds weigh less as trials finish); kde: "
        "density ratio of good to bad "
        "configurations at the highest well-filled rung (BOHB), random draws until it has enough; under asha with "
        "type promotion it runs BOHB's own recipe (per-parameter bandwidths, wider draws).",
    )
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="Seed; the same seed gives the same configurations.")
    grid_points: int = Field(default=5, ge=2, le=1000, description="Grid: values per continuous parameter.")
    random_fraction: float = Field(
        default=0.2, ge=0.0, le=1.0, description="kde, gp: share of new trials drawn at random instead of by the model."
    )


class SchedulerSpec(SpecModel):
    algorithm: Literal["fifo", "asha", "hyperband", "sha", "median", "adaptive"] = Field(
        default="adaptive",
        description="fifo: no early stopping; asha: asynchronous successive halving; hyperband: "
        "asynchronous Hyperband; sha: synchronous successive halving; median: median stopping rule; "
        "adaptive: successive halving that judges only at rungs whose ranks it has measured to agree with "
        "later epochs.",
    )
    type: Literal["promotion", "stopping"] = Field(
        default="promotion",
        description="asha/hyperband: promotion pauses trials at rungs and resumes the best; "
        "stopping runs trials to the end unless stopped at a rung.",
    )
    min_resource: int = Field(default=1, ge=1, le=1_000_000, description="Epochs of the first rung (grace period).")
    max_resource: int = Field(ge=1, le=1_000_000, description="Epochs a fully trained trial runs.")
    reduction_factor: float = Field(default=3, ge=2, le=100, description="eta: 1/eta of a rung is promoted.")
    brackets: int = Field(default=1, ge=1, le=20, description="hyperband: number of brackets.")
    promote_in_place: bool = Field(
        default=True,
        description="A trial that would be promoted the moment it reaches a rung continues without pausing.",
    )
    probe_fraction: float = Field(
        default=0.1, ge=0.0, le=1.0,
        description="adaptive: once a rung is trusted, share of new trials trained to maxResource unjudged, to "
                    "measure how well rungs rank (before that, every trial is such a probe).",
    )
    min_agreement: float = Field(
        default=MIN_AGREEMENT, ge=-1.0, le=1.0,
        description="adaptive: a rung judges trials once its rank correlation with a later epoch is confidently above "
                    "this; the kde searcher fits a rung below maxResource only once its ranks agree with the top's "
                    "as well.",
    )
    min_samples: int = Field(default=3, ge=1, le=1000, description="median: trials needed at a resource before stopping.")
    sha_bracket_size: Optional[int] = Field(
        default=None, ge=1, le=100_000, description="sha: trials per bracket (default eta ** (rungs - 1))."
    )

    @model_validator(mode="after")
    def _check_resources(self):
        if self.max_resource < self.min_resource:
            raise ValueError(
                f"maxResource: must be >= minResource (got minResource={self.min_resource}, "
                f"maxResource={self.max_resource}); raise maxResource or lower minResource"
            )
        return self


class Budget(SpecModel):
    max_trials: int = Field(default=20, ge=1, le=100_000, description="Trials created in all.")
    max_failed_trials: int = Field(default=3, ge=0, le=100_000, description="The experiment fails after more failed trials.")
    max_retries: int = Field(default=2, ge=0, le=100, description="Retries of a crashed run, from its last checkpoint.")
    max_duration: Optional[Union[int, str]] = Field(
        default=None, description="Wall-clock limit: seconds or a duration such as 90m, 2h, 1h30m."
    )
    parallelism: int = Field(default=1, ge=1, le=10_000, description="Trials running at once.")
    start_timeout: Union[int, str] = Field(
        default="10m", description="A trial pod whose trainer has not started this long after the pod was "
        "created (no node with a free GPU, an image that cannot be pulled, a missing Secret) counts as a failed "
        "run, retried up to maxRetries: seconds or a duration such as 90s, 10m. Allow for pulling the trainer "
        "image on a fresh node.")

    @field_validator("max_duration", "start_timeout")
    @classmethod
    def _duration(cls, v):
        if v is None:
            return v
        parse_duration(v)  # raises with a message naming the accepted forms
        return v

    @property
    def max_duration_seconds(self) -> Optional[float]:
        return None if self.max_duration is None else parse_duration(self.max_duration)

    @property
    def start_timeout_seconds(self) -> float:
        return parse_duration(self.start_timeout)


class CheckpointSpec(SpecModel):
    storage: Literal["perTrial", "shared"] = Field(
        default="perTrial", description="perTrial: one PersistentVolumeClaim per trial; shared: one claim, a sub-path per trial."
    )
    size: str = Field(default="1Gi", description="perTrial: size of each claim.")
    storage_class_name: Optional[str] = Field(default=None, description="perTrial: StorageClass of the claims.")
    claim_name: Optional[str] = Field(default=None, description="shared: name of an existing ReadWriteMany claim.")
    mount_path: str = Field(default="/hpo/checkpoints", description="Where the trainer sees its checkpoint folder.")
    keep_checkpoints: bool = Field(default=False, description="Keep stopped trials' checkpoints (the best trial's is always kept).")

    @field_validator("size")
    @classmethod
    def _size(cls, v: str) -> str:
        if not QUANTITY_RE.match(v):
            raise ValueError(f"must be a Kubernetes quantity such as 500Mi or 2Gi (got {v!r})")
        return v

    @field_validator("mount_path")
    @classmethod
    def _abs(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"must be an absolute path (got {v!r})")
        return v

    @model_validator(mode="after")
    def _claim(self):
        if self.storage == "shared" and not self.claim_name:
            raise ValueError("claimName: required when storage is shared; name an existing ReadWriteMany claim")
        return self


class LocalSpec(SpecModel):
    """How ``hpo run`` starts the trainer on this machine (the operator ignores it)."""

    command: Optional[list[str]] = Field(
        default=None,
        description="Trainer command for local runs; relative paths are relative to the manifest's folder. "
        "Default: the trainer container's command and args.",
    )
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for local runs.")


class HPOExperimentSpec(SpecModel):
    objective: Objective
    search_space: dict[str, Domain] = Field(description="Hyperparameters: name -> domain.")
    searcher: SearcherSpec = Field(default_factory=SearcherSpec)
    scheduler: SchedulerSpec
    budget: Budget = Field(default_factory=Budget)
    trial_template: dict[str, Any] = Field(description="Pod template of a trial: metadata and spec (a PodSpec).")
    trainer_container: Optional[str] = Field(default=None, description="Name of the trainer container (default: the first).")
    checkpoints: CheckpointSpec = Field(default_factory=CheckpointSpec)
    local: LocalSpec = Field(default_factory=LocalSpec)

    @field_validator("search_space")
    @classmethod
    def _space(cls, v: dict) -> dict:
        if not v:
            raise ValueError("must name at least one hyperparameter")
        if len(v) > 100:
            raise ValueError(f"at most 100 hyperparameters (got {len(v)})")
        for name in v:
            if not PARAM_RE.match(name):
                raise ValueError(f"{name!r} is not a valid parameter name; use letters, digits, '_', '.', '-', "
                                 "starting with a letter or '_'")
        return v

    @field_validator("trial_template")
    @classmethod
    def _template(cls, v: dict) -> dict:
        spec = v.get("spec")
        if not isinstance(spec, dict):
            raise ValueError("spec: required; give a pod spec with the trainer container")
        containers = spec.get("containers")
        if not isinstance(containers, list) or not containers:
            raise ValueError("spec.containers: must list the trainer container")
        names = []
        for i, c in enumerate(containers):
            if not isinstance(c, dict) or not c.get("name") or not c.get("image"):
                raise ValueError(f"spec.containers[{i}]: needs a name and an image")
            names.append(c["name"])
            for where in ("limits", "requests"):
                for res, qty in ((c.get("resources") or {}).get(where) or {}).items():
                    if not QUANTITY_RE.match(str(qty)):
                        raise ValueError(
                            f"spec.containers[{i}].resources.{where}.{res}: {qty!r} is not a Kubernetes quantity (e.g. 1, 500m, 2Gi)"
                        )
        if len(set(names)) != len(names):
            raise ValueError("spec.containers: container names must be distinct")
        problem = security_problem(spec)
        if problem:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _trainer(self):
        names = [c["name"] for c in self.trial_template["spec"]["containers"]]
        if self.trainer_container is not None and self.trainer_container not in names:
            raise ValueError(f"trainerContainer: {self.trainer_container!r} is not one of the template's containers {names}")
        return self

    def trainer(self) -> dict:
        """The trainer container of the template."""
        containers = self.trial_template["spec"]["containers"]
        if self.trainer_container is None:
            return containers[0]
        return next(c for c in containers if c["name"] == self.trainer_container)


class ObjectMeta(SpecModel):
    model_config = SpecModel.model_config | {"extra": "allow"}
    name: str
    namespace: Optional[str] = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if len(v) > MAX_EXPERIMENT_NAME or not NAME_RE.match(v):
            raise ValueError(
                f"must be lowercase letters, digits and '-', start and end alphanumeric, at most "
                f"{MAX_EXPERIMENT_NAME} characters (got {v!r})"
            )
        return v


class HPOExperiment(SpecModel):
    api_version: Literal[resources.API_VERSION] = Field(default=resources.API_VERSION, alias="apiVersion")
    kind: Literal[resources.EXPERIMENT_KIND] = resources.EXPERIMENT_KIND
    metadata: ObjectMeta
    spec: HPOExperimentSpec
