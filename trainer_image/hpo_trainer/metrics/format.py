"""The metrics line format, shared by the writer (trainer) and the parser (sidecar, local runner).

One JSON object per line, UTF-8, ending in "\\n":

    {"epoch": 3, "val_error": 0.12, "val_loss": 0.41, "time": 1718000000.25}

JSON has no NaN or infinity, and a diverged trial does report them, so
non-finite numbers are written as the strings "nan", "inf" and "-inf" and
decoded back to floats by the parser. Strings were chosen over null-plus-flag
because each value stays self-describing and `jq`/pandas readers can map them
with one rule.
"""

from __future__ import annotations

import math
from typing import Any

from ..contract import EPOCH_KEY

TIME_KEY = "time"  # unix time (float seconds) at which the writer wrote the line
RESERVED_KEYS = (EPOCH_KEY, TIME_KEY)

NONFINITE_TO_TEXT = {"nan": "nan", "inf": "inf", "-inf": "-inf"}
TEXT_TO_FLOAT = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def encode_number(value: float) -> float | int | str:
    """A finite number as itself; NaN/inf as their string spelling."""
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return "nan"
        return "inf" if value > 0 else "-inf"
    return value


def decode_value(value: Any) -> Any:
    """Undo encode_number: "nan"/"inf"/"-inf" become floats; everything else is unchanged."""
    if isinstance(value, str) and value in TEXT_TO_FLOAT:
        return TEXT_TO_FLOAT[value]
    return value
