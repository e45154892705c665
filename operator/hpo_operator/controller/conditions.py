"""Status conditions, replaced by type; lastTransitionTime moves only when the status flips."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional


def set_condition(status: Optional[dict], type_: str, status_value: str, reason: str, message: str,
                  generation: Optional[int]) -> list[dict]:
    conditions = [dict(c) for c in (status or {}).get("conditions") or []]
    old = next((c for c in conditions if c.get("type") == type_), None)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    new = {"type": type_, "status": status_value, "reason": reason, "message": message,
           "lastTransitionTime": old["lastTransitionTime"] if old and old.get("status") == status_value
           and old.get("lastTransitionTime") else now,
           "observedGeneration": generation}
    return [c for c in conditions if c.get("type") != type_] + [new]
