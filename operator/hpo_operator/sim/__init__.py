"""Backend: a simulated clock over learning-curve tables (benchmarking schedulers)."""

from hpo_operator.sim.compare import RANDOM, SchedulerSummary, compare
from hpo_operator.sim.simulator import SimulationResult, simulate
from hpo_operator.sim.table import LearningCurveTable

__all__ = ["RANDOM", "LearningCurveTable", "SchedulerSummary", "SimulationResult", "compare", "simulate"]
