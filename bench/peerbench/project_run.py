"""The project's own methods on the same table and protocol, through hpo_operator.sim in this process."""

from __future__ import annotations

import inspect
from typing import Optional

from hpo_operator.sim import LearningCurveTable, compare
from peerbench.protocol import Protocol


def run_project(table: LearningCurveTable, names: list[str], protocol: Protocol,
                seeds: int) -> dict[str, list[dict[float, Optional[float]]]]:
    """Per method (``random`` always included), each seed's time to each target."""
    kwargs = dict(workers=protocol.workers, seeds=seeds, epoch_scale=protocol.epoch_scale,
                  overhead=protocol.overhead, min_resource=protocol.min_resource,
                  reduction_factor=protocol.reduction_factor, max_trials=protocol.max_trials)
    if protocol.draws != "with-replacement":
        # Rows without repeats arrived in the simulator with the model-based searchers.
        if "draws" not in inspect.signature(compare).parameters:
            raise SystemExit("--draws without-repeats: this checkout's simulator draws table rows only with "
                             "replacement; pass --draws with-replacement")
        kwargs["draws"] = protocol.draws
    results = compare(table, names, **kwargs)
    return {name: [r.time_to_target for r in s.runs] for name, s in results.items()}
