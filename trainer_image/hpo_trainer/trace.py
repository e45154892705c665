"""Opt-in timestamps of a run's start-up (HPO_TRACE=1), for measuring how long a resume takes.

With HPO_TRACE set to anything but "" or "0", the SDK writes one line to
stderr at each mark, which bench/resume_latency.py reads from the pod's log:

    hpo_trainer trace {"mark": "restored", "time": 1764600000.123, "epoch": 9, "seconds": 0.041}

Marks: ``imported`` (the SDK was imported; carries ``process_start``, when
the kernel started this process), ``restored`` (torch_state.restore returned;
the checkpoint's epoch and the seconds it took), ``decision`` (a promote-in-
place decision was read from the control file), ``reported`` (each epoch's
metrics line was written). Times are wall-clock seconds, comparable with the
cluster's timestamps where the node's clock is synchronised. Unset, the
marks cost one environment lookup.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from .contract import ENV_TRACE

PREFIX = "hpo_trainer trace "


def enabled() -> bool:
    return os.environ.get(ENV_TRACE, "") not in ("", "0")


def mark(name: str, **fields: Any) -> None:
    if not enabled():
        return
    line = json.dumps({"mark": name, "time": time.time(), **fields})
    print(PREFIX + line, file=sys.stderr, flush=True)


def process_start_time() -> float | None:
    """Wall-clock time the kernel started this process (Linux), None elsewhere."""
    try:
        with open("/proc/self/stat") as f:
            # Field 22 (starttime, in clock ticks after boot) follows the command name, which may hold spaces.
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
