"""Layer 1: the manifest models (no I/O beyond parsing) and the CRDs generated from them."""

from hpo_operator.spec.errors import ManifestError
from hpo_operator.spec.experiment import (
    GROUP_VERSION,
    Budget,
    CheckpointSpec,
    HPOExperiment,
    HPOExperimentSpec,
    Objective,
    SchedulerSpec,
    SearcherSpec,
)
from hpo_operator.spec.load import experiment_from_dict, experiment_spec_from_dict, load_experiment

__all__ = [
    "GROUP_VERSION", "Budget", "CheckpointSpec", "HPOExperiment", "HPOExperimentSpec", "ManifestError",
    "Objective", "SchedulerSpec", "SearcherSpec", "experiment_from_dict", "experiment_spec_from_dict",
    "load_experiment",
]
