"""Kubernetes Events the operator posts: what a step decided, grouped so their number follows the time,
not the steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import kopf


@dataclass(frozen=True)
class Event:
    trial: Optional[str]  # None: on the experiment
    type: str  # Normal | Warning
    reason: str
    message: str


# An Event naming several trials lists them up to this many characters (the API server takes 1 KiB).
EVENT_MESSAGE_CHARS = 900
def coalesce_events(events: Sequence[Event]) -> list[Event]:
    """The Events one step posts: Warnings, and a Normal reason only one trial had, on their trial; the
    Normal events of several trials with one reason as a single Event on the experiment that names each
    once (with its latest message).

    A busy step of a thousand-trial experiment launches, pauses and stops dozens of trials; one Event
    each made Events the operator's most frequent write. Failures and sidecar problems stay per trial.
    """
    latest: dict[tuple[str, str], Event] = {}  # (reason, trial) -> that trial's latest Normal event of it
    for ev in events:
        if ev.type == "Normal" and ev.trial is not None:
            latest[(ev.reason, ev.trial)] = ev
    groups: dict[str, list[Event]] = {}  # held events of several steps may name a trial more than once
    for ev in latest.values():
        groups.setdefault(ev.reason, []).append(ev)
    out, grouped = [], set()
    for ev in events:
        if ev.type != "Normal" or ev.trial is None:
            out.append(ev)
        elif ev.reason not in grouped:
            grouped.add(ev.reason)
            group = groups[ev.reason]
            out.append(group[0] if len(group) == 1 else Event(None, "Normal", ev.reason, _list_trials(group)))
    return out


def _list_trials(group: list[Event]) -> str:
    message = f"{len(group)} trials: "
    for i, ev in enumerate(group):
        item = f"{ev.trial} ({ev.message})" + ("; " if i + 1 < len(group) else "")
        rest = f"and {len(group) - i} more"
        if len(message) + len(item) + (len(rest) if i + 1 < len(group) else 0) > EVENT_MESSAGE_CHARS:
            return message + rest
        message += item
    return message


def post_events(experiment: dict, refs: dict[str, Optional[dict]], events: Sequence[Event]) -> None:
    """Post ``events`` (``coalesce_events``); ``refs``: their trials' object references (a trial not created
    yet has none: its events are dropped)."""
    for ev in coalesce_events(events):
        target = refs.get(ev.trial) if ev.trial else experiment
        if target is not None:
            kopf.event(target, type=ev.type, reason=ev.reason, message=ev.message)
