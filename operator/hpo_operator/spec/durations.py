"""Durations as users write them: 3600, "3600s", "90m", "2h", "1h30m", "1d"."""

from __future__ import annotations

import functools
import re

_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@functools.lru_cache(maxsize=256)  # the operator reads budget durations every step
def parse_duration(value: int | float | str) -> float:
    """Seconds in ``value``; raises ValueError naming the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("must be seconds or a duration such as 90m, 2h, 1h30m (got a boolean)")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            parts = _PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"must be seconds or a duration such as 90m, 2h, 1h30m (got {value!r})")
            seconds = sum(float(n) * _UNIT[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"must be positive (got {value!r})")
    return seconds
