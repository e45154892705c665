"""The project's Kubernetes names and phase vocabularies, in one place.

Imported by every layer (spec, engine, controller, sidecar, views, cli), so it
imports nothing of the project and nothing heavy. The phases are ``str``
enums: a member equals its string (``TrialPhase.RUNNING == "Running"``) and
serialises as it, so status records and results files stay the same JSON.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Optional

GROUP = "hpo.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"  # an object's apiVersion

EXPERIMENT_KIND = "HPOExperiment"
EXPERIMENT_PLURAL = "hpoexperiments"
EXPERIMENT_SINGULAR = "hpoexperiment"
EXPERIMENT_SHORT = "hpx"
TRIAL_KIND = "HPOTrial"
TRIAL_PLURAL = "hpotrials"
TRIAL_SINGULAR = "hpotrial"
TRIAL_SHORT = "hpt"
CATEGORY = "hpo"  # `kubectl get hpo` lists both kinds


class _StrEnum(str, Enum):
    """Prints and formats as its value (``f"{TrialPhase.RUNNING}"`` is ``Running``), as ``enum.StrEnum`` does
    on Python 3.11+."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


class TrialPhase(_StrEnum):
    PENDING = "Pending"  # waiting for a slot (new, or to retry after a failed run)
    RUNNING = "Running"  # a run is (or is about to be) in flight
    PAUSED = "Paused"  # reached its rung; may be promoted
    STOPPED = "Stopped"  # the scheduler (or the experiment's end) stopped it early
    COMPLETED = "Completed"  # trained to maxResource
    FAILED = "Failed"  # out of retries


FINAL_TRIAL_PHASES = frozenset({TrialPhase.STOPPED, TrialPhase.COMPLETED, TrialPhase.FAILED})
ACTIVE_TRIAL_PHASES = frozenset({TrialPhase.RUNNING, TrialPhase.PENDING})  # hold (or wait for) a slot


class ExperimentPhase(_StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    INTERRUPTED = "Interrupted"  # `hpo run` only: stopped by the user; never on a cluster


FINISHED_EXPERIMENT_PHASES = frozenset({ExperimentPhase.SUCCEEDED, ExperimentPhase.FAILED})


def text_value(value: Optional[float]) -> Optional[str]:
    """An objective value as the status columns show it (``lastValue``, ``bestValue``)."""
    if value is None:
        return None
    return "NaN" if not math.isfinite(value) else f"{value:.6g}"


class PodPhase(_StrEnum):
    """Kubernetes' own pod phases (core/v1 PodStatus.phase), named so they are not mistaken for a trial's."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"
