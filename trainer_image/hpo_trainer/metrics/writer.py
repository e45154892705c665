"""Append one metrics line per epoch, durably, so the sidecar can read it at once.

Each line goes out in a single os.write on an O_APPEND descriptor (a reader
never sees two lines interleaved, and sees a partial line only if the writer
dies mid-write, which the tail reader handles), then fsync, so a line the
sidecar has read is also on disk when the trainer's pod is gone.
"""

from __future__ import annotations

import json
import numbers
import os
import sys
import time
from pathlib import Path
from typing import Any

from .. import trace
from ..contract import EPOCH_KEY
from ..fsutil import fsync_dir, write_all
from .format import RESERVED_KEYS, TIME_KEY, encode_number


class MetricsWriter:
    """Writes metrics lines to one file. The file is opened per line: an epoch is
    seconds to hours long, and not holding a descriptor means nothing leaks and
    a file replaced between epochs is simply recreated."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def write(self, epoch: int, **metrics: Any) -> dict[str, Any]:
        """Append `{"epoch": epoch, **metrics, "time": now}`; return the record as written."""
        record = format_record(epoch, metrics, time.time())
        line = (json.dumps(record, allow_nan=False) + "\n").encode("utf-8")
        created = not self.path.exists()
        if created:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if _ends_torn(fd):
                # A previous run died mid-line. End that fragment first, so it
                # is one bad line for the reader, not glued onto this good one.
                line = b"\n" + line
            write_all(fd, line)  # one os.write for any line a regular file accepts whole
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.path.parent)  # the new file's name must survive a crash too
        return record


def _ends_torn(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def format_record(epoch: int, metrics: dict[str, Any], now: float) -> dict[str, Any]:
    """Validate and encode one line's object; errors name the offending metric."""
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 1:
        raise ValueError(f"epoch must be a positive int, got {epoch!r}")
    if not metrics:
        raise ValueError("report at least one metric, e.g. report(epoch, val_error=0.1)")
    record: dict[str, Any] = {EPOCH_KEY: int(epoch)}
    for name, value in metrics.items():
        if name in RESERVED_KEYS:
            raise ValueError(f"metric name {name!r} is reserved for the line format; rename it")
        record[name] = encode_number(_as_number(name, value))
    record[TIME_KEY] = now
    return record


def _as_number(name: str, value: Any) -> int | float:
    # Accept numpy scalars and 0-d tensors (they have .item()) so trainers need no casts.
    if hasattr(value, "item") and not isinstance(value, (int, float)):
        try:
            value = value.item()
        except (TypeError, ValueError, RuntimeError):
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"metric {name!r} must be a number, got {type(value).__name__} {value!r}")
    return float(value) if isinstance(value, float) else int(value)


def report(epoch: int, **metrics: Any) -> dict[str, Any] | None:
    """Append the metrics of `epoch` to the trial's metrics file (HPO_METRICS_FILE).

    Call it after the epoch's checkpoint is saved: a runner that sees epoch N
    may resume from N. Epochs up to HPO_START_EPOCH were reported by an earlier
    run of this trial; if the trainer re-trains them (its newest checkpoint was
    lost) they are not written again and None is returned.
    """
    from ..context import TrialContext  # late: the context is read when first needed

    ctx = TrialContext.from_env()
    if isinstance(epoch, numbers.Integral) and not isinstance(epoch, bool) and epoch <= ctx.start_epoch:
        print(
            f"hpo_trainer: epoch {epoch} was already reported before this resume "
            f"(HPO_START_EPOCH={ctx.start_epoch}); not written again",
            file=sys.stderr,
        )
        return None
    record = MetricsWriter(ctx.metrics_file).write(epoch, **metrics)
    trace.mark("reported", epoch=epoch)
    return record


__all__ = ["MetricsWriter", "report", "format_record"]
