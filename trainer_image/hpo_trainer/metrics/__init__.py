"""Metrics lines: writing them (trainer) and reading them back (sidecar, local runner)."""

from .format import TIME_KEY, decode_value, encode_number
from .parse import ErrorReason, MetricLineError, MetricRecord, parse_metric_line
from .reader import MetricsReader
from .tail import DEFAULT_MAX_LINE_BYTES, MetricsTail
from .writer import MetricsWriter, report

__all__ = [
    "DEFAULT_MAX_LINE_BYTES", "ErrorReason", "MetricLineError", "MetricRecord", "MetricsReader",
    "MetricsTail", "MetricsWriter", "TIME_KEY", "decode_value", "encode_number",
    "parse_metric_line", "report",
]
