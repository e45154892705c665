"""Layer 3: multi-fidelity schedulers. Pure, deterministic, no clock, no I/O."""

from hpo_operator.scheduling.asha import ASHA, AsynchronousHyperband
from hpo_operator.scheduling.base import Decision, Job, Scheduler, TrialRecord, rank_key, rung_levels
from hpo_operator.scheduling.factory import SCHEDULER_NAMES, fidelity_levels, make_scheduler, scheduler_spec_for
from hpo_operator.scheduling.fifo import FIFO
from hpo_operator.scheduling.median import MedianStopping
from hpo_operator.scheduling.sha import SynchronousSuccessiveHalving
from hpo_operator.scheduling.trust import TrustedRungs

__all__ = [
    "ASHA", "AsynchronousHyperband", "Decision", "FIFO", "Job", "MedianStopping", "SCHEDULER_NAMES", "Scheduler",
    "SynchronousSuccessiveHalving", "TrialRecord", "TrustedRungs", "fidelity_levels", "make_scheduler", "rank_key", "rung_levels", "scheduler_spec_for",
]
