"""The sidecar's JSON-patch ``add`` operations applied to a trial's status dict, as the API server applies them,
for tests that play the server without one (the integration tier sends the same patches to a real one)."""

from __future__ import annotations


class MissingList(Exception):
    """An append (``/status/<list>/-``) to a list the status does not have: the API server refuses it (422)."""


def apply_adds(status: dict, ops: list[dict]) -> None:
    """Apply ``add`` ops on ``/status/<field>`` (set) or ``/status/<list>/-`` (append) to ``status``;
    ``test`` ops are the caller's to check."""
    for op in ops:
        if op["op"] != "add":
            continue
        key = op["path"].split("/")[2]
        if not op["path"].endswith("/-"):
            status[key] = op["value"]
        elif key not in status:
            raise MissingList(op["path"])
        else:
            status[key].append(op["value"])
