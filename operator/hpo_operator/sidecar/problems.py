"""Problems the sidecar records in its trial's status (``status.problems``), for the operator to announce.

The sidecar's only write access is its trial's status, so a problem (a bad
metrics line, a truncated file, epochs trained again) is appended there as
``{reason, message, attempt}``; the operator posts one Warning Event for each.
One entry per reason per run: a trainer printing garbage every epoch costs
one entry, not one per line.
"""

from __future__ import annotations

from typing import Optional

EPOCHS_REPEATED = "epochs_repeated"
FILE_TRUNCATED = "metrics_file_truncated"
FILE_UNREADABLE = "metrics_file_unreadable"
MAX_MESSAGE = 500  # characters; an excerpt of a bad line is enough to find it


def printable(text: str) -> str:
    """``text`` cut to MAX_MESSAGE characters, control characters (NUL, binary garbage) spelled out as escapes."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:MAX_MESSAGE])
    return shown + ("..." if len(text) > MAX_MESSAGE else "")


def problem_entry(reason: str, message: str, attempt: Optional[int]) -> dict:
    entry = {"reason": reason, "message": printable(message)}
    if attempt is not None:
        entry["attempt"] = attempt
    return entry


def recorded(status: dict, reason: str, attempt: Optional[int]) -> bool:
    """Whether this run already recorded a problem with this reason."""
    return any(isinstance(p, dict) and p.get("reason") == reason and p.get("attempt") == attempt
               for p in status.get("problems") or [])


def problem_patch(status: dict, entry: dict) -> list[dict]:
    """Append ``entry`` with a JSON patch; a trial created by an older operator has no list yet, so start one.

    Only the trial's one sidecar at a time writes ``problems``, so starting the list cannot drop another's entries.
    """
    if isinstance(status.get("problems"), list):
        return [{"op": "add", "path": "/status/problems/-", "value": entry}]
    return [{"op": "add", "path": "/status/problems", "value": [entry]}]
