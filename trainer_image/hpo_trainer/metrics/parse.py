"""Validate one metrics line into a record or an error (used by the sidecar and the local runner).

A line comes from user code, so anything can be in it. Every way it can be
wrong has its own `ErrorReason`, so callers can count and report them, and a
message a user can act on. Nothing here raises for bad input.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..contract import EPOCH_KEY
from .format import TIME_KEY, decode_value

_EXCERPT = 120
MAX_EPOCH = 2**31 - 1  # far beyond any training run; larger integers do not fit the API's integer fields


class ErrorReason(str, enum.Enum):
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    MISSING_EPOCH = "missing_epoch"
    BAD_EPOCH = "bad_epoch"                  # not a positive integer
    EPOCH_NOT_INCREASING = "epoch_not_increasing"  # repeated or backwards
    MISSING_OBJECTIVE = "missing_objective"
    OBJECTIVE_NOT_NUMBER = "objective_not_number"
    LINE_TOO_LONG = "line_too_long"          # produced by MetricsTail, never by the parser


@dataclass(frozen=True)
class MetricRecord:
    """One valid epoch. `value` is the objective as a float (NaN/inf kept: they rank worst)."""

    epoch: int
    objective: str
    value: float
    metrics: dict[str, Any] = field(default_factory=dict)  # every metric, objective included, decoded
    time: float | None = None  # the trainer's clock when written, if it sent a number


@dataclass(frozen=True)
class MetricLineError:
    reason: ErrorReason
    message: str
    excerpt: str = ""  # the start of the offending line, for logs

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.message}" + (f" (line: {self.excerpt})" if self.excerpt else "")


def _excerpt(raw: bytes) -> str:
    text = raw[:_EXCERPT].decode("utf-8", errors="replace")
    return text + ("..." if len(raw) > _EXCERPT else "")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_metric_line(raw: bytes, objective: str, last_epoch: int | None) -> MetricRecord | MetricLineError:
    """Parse one line (with or without its trailing newline).

    last_epoch is the newest epoch already accepted for this trial (None when
    none): a line must report a later one, so a line repeated after a restart
    is never counted twice.
    """
    raw = raw.rstrip(b"\r\n")

    def error(reason: ErrorReason, message: str) -> MetricLineError:
        return MetricLineError(reason, message, _excerpt(raw))

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return error(ErrorReason.NOT_UTF8, f"line is not UTF-8 (bad byte at {exc.start}); write text with hpo_trainer.report")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return error(ErrorReason.NOT_JSON, f"line is not JSON ({exc.msg} at position {exc.pos}); write lines with hpo_trainer.report")
    except (ValueError, RecursionError) as exc:  # an integer of thousands of digits, arrays nested thousands deep
        return error(ErrorReason.NOT_JSON, f"line is not JSON this reader accepts ({str(exc)[:80]}); write lines with hpo_trainer.report")
    if not isinstance(obj, dict):
        return error(ErrorReason.NOT_OBJECT, f"line is a JSON {type(obj).__name__}, expected an object like {{\"epoch\": 1, \"{objective}\": 0.5}}")
    if EPOCH_KEY not in obj:
        return error(ErrorReason.MISSING_EPOCH, f"line has no \"{EPOCH_KEY}\" key")
    epoch = obj[EPOCH_KEY]
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 1 <= epoch <= MAX_EPOCH:
        shown = repr(epoch) if len(repr(epoch)) <= 40 else repr(epoch)[:40] + "..."
        return error(ErrorReason.BAD_EPOCH, f"\"{EPOCH_KEY}\" must be a positive integer up to {MAX_EPOCH}, got {shown}")
    if last_epoch is not None and epoch <= last_epoch:
        kind = "repeated" if epoch == last_epoch else "went backwards"
        return error(ErrorReason.EPOCH_NOT_INCREASING, f"epoch {epoch} {kind}: epoch {last_epoch} was already reported")
    if objective not in obj:
        present = sorted(k for k in obj if k not in (EPOCH_KEY, TIME_KEY))
        return error(ErrorReason.MISSING_OBJECTIVE, f"objective \"{objective}\" missing; the line has {present}")
    value = decode_value(obj[objective])
    if not _is_number(value):
        return error(ErrorReason.OBJECTIVE_NOT_NUMBER, f"objective \"{objective}\" must be a number, got {obj[objective]!r}")
    metrics = {k: decode_value(v) for k, v in obj.items() if k not in (EPOCH_KEY, TIME_KEY)}
    stamp = _to_float(obj.get(TIME_KEY)) if _is_number(obj.get(TIME_KEY)) else None
    return MetricRecord(
        epoch=epoch,
        objective=objective,
        value=_to_float(value),
        metrics=metrics,
        time=stamp if stamp is not None and math.isfinite(stamp) else None,
    )


def _to_float(value: int | float) -> float:
    # JSON integers are unbounded; one too large for a float is an infinity, not a crash.
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf
