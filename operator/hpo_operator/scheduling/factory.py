"""Build the scheduler a manifest asks for."""

from __future__ import annotations

from typing import Optional

from hpo_operator.scheduling.asha import AsynchronousHyperband
from hpo_operator.scheduling.base import Mode, Scheduler, rung_levels
from hpo_operator.scheduling.fifo import FIFO
from hpo_operator.scheduling.median import MedianStopping
from hpo_operator.scheduling.sha import SynchronousSuccessiveHalving
from hpo_operator.scheduling.trust import TrustedRungs

# Names accepted by `hpo simulate --scheduler`: the manifest's algorithm plus type.
SCHEDULER_NAMES = ("fifo", "asha-promotion", "asha-stopping", "hyperband-promotion", "hyperband-stopping", "sha", "median",
                   "adaptive-promotion", "adaptive-stopping")


def make_scheduler(spec, mode: Mode, max_trials: Optional[int], seed: int = 0) -> Scheduler:
    """A scheduler from a ``SchedulerSpec`` (``spec.algorithm``, ``spec.type``, resources, eta)."""
    algorithm = spec.algorithm
    if algorithm == "fifo":
        return FIFO(mode, spec.max_resource, max_trials)
    if algorithm in ("asha", "hyperband"):
        return AsynchronousHyperband(
            mode,
            spec.min_resource,
            spec.max_resource,
            spec.reduction_factor,
            type=spec.type,
            brackets=spec.brackets if algorithm == "hyperband" else 1,
            promote_in_place=spec.promote_in_place,
            max_trials=max_trials,
            seed=seed,
        )
    if algorithm == "sha":
        return SynchronousSuccessiveHalving(
            mode, spec.min_resource, spec.max_resource, spec.reduction_factor, spec.sha_bracket_size, max_trials
        )
    if algorithm == "adaptive":
        return TrustedRungs(mode, spec.min_resource, spec.max_resource, spec.reduction_factor, type=spec.type,
                            max_trials=max_trials, seed=seed, probe_fraction=spec.probe_fraction,
                            min_agreement=spec.min_agreement)
    if algorithm == "median":
        return MedianStopping(mode, spec.min_resource, spec.max_resource, spec.min_samples, max_trials)
    raise ValueError(f"scheduler.algorithm: unknown {algorithm!r}")


def fidelity_levels(spec) -> list[int]:
    """The epochs a model-based searcher fits on: the rungs (from minResource by eta) and maxResource."""
    return rung_levels(spec.min_resource, spec.max_resource, spec.reduction_factor) + [spec.max_resource]


def scheduler_spec_for(name: str, base):
    """``base`` (a SchedulerSpec) switched to the scheduler called ``name`` in SCHEDULER_NAMES."""
    if name not in SCHEDULER_NAMES:
        raise ValueError(f"unknown scheduler {name!r}; choose from {', '.join(SCHEDULER_NAMES)}")
    algorithm, _, type_ = name.partition("-")
    update = {"algorithm": algorithm}
    if type_:
        update["type"] = type_
    if algorithm == "hyperband" and base.brackets == 1:
        update["brackets"] = 3
    return base.model_copy(update=update)
