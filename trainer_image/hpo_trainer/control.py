"""Promote in place: at HPO_UNTIL_EPOCH, wait briefly for the runner's decision before exiting.

The runner writes HPO_CONTROL_FILE (atomically) as
``{"decided_epoch": 9, "until": 27}``. A decision for the epoch the trainer
stopped at, with a larger ``until``, means "keep training in this process":
the trial skips a pod restart and a checkpoint load. Anything else, or no
decision within HPO_DECISION_TIMEOUT seconds, means exit 0 (paused).
`TrialContext.epochs()` calls this for the trainer, so trainers need no code for it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .contract import CONTROL_DECIDED_EPOCH, CONTROL_UNTIL

POLL_SECONDS = 0.05


def read_decision(path: Path) -> tuple[int, int] | None:
    """(decided_epoch, until) from the control file; None when absent or not (yet) a valid decision."""
    try:
        obj = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(obj, dict):
        return None
    decided, until = obj.get(CONTROL_DECIDED_EPOCH), obj.get(CONTROL_UNTIL)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (decided, until)):
        return None
    return decided, until


def wait_for_decision(path: Path, epoch: int, timeout: float) -> int | None:
    """Wait up to `timeout` seconds for a decision about `epoch`; return its `until`, or None on timeout.

    A decision counts when decided_epoch >= epoch (the runner may also have
    decided a later rung ahead of time).
    """
    deadline = time.monotonic() + timeout
    while True:
        decision = read_decision(path)
        if decision is not None and decision[0] >= epoch:
            return decision[1]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        time.sleep(min(POLL_SECONDS, remaining))
