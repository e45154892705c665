"""Tail + parse: the metrics file as a stream of validated records, for the sidecar and the local runner."""

from __future__ import annotations

from pathlib import Path

from .parse import MetricLineError, MetricRecord, parse_metric_line
from .tail import DEFAULT_MAX_LINE_BYTES, MetricsTail


class MetricsReader:
    """Poll a trial's metrics file; each new valid epoch comes back once, in order.

    last_epoch is the newest epoch already accepted (e.g. from the trial's
    status after a sidecar restart); lines up to it are returned as
    EPOCH_NOT_INCREASING errors, never as records.
    """

    def __init__(
        self,
        path: Path | str,
        objective: str,
        *,
        last_epoch: int | None = None,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ):
        self.objective = objective
        self.last_epoch = last_epoch
        self.tail = MetricsTail(path, max_line_bytes=max_line_bytes)

    def poll(self) -> list[MetricRecord | MetricLineError]:
        results: list[MetricRecord | MetricLineError] = []
        for item in self.tail.read():
            if isinstance(item, MetricLineError):
                results.append(item)
                continue
            parsed = parse_metric_line(item, self.objective, self.last_epoch)
            if isinstance(parsed, MetricRecord):
                self.last_epoch = parsed.epoch
            results.append(parsed)
        return results
