"""What a resume costs, stage by stage, computed from what bench/resume_latency.py recorded on a cluster.

Pure: no cluster, no clock. The recording is a list of records, one per thing
seen, each stamped with the time the recorder received it (``t``, wall-clock
seconds):

- ``{"kind": "trial", "name", "phase", "pod", "until", "decided", "observations": [[epoch, attempt], ...]}``
  for each watch event of an HPOTrial;
- ``{"kind": "pod", "name", "scheduled", "trainer"}`` for each watch event of a
  pod (``trainer``: "waiting", "running" or "terminated"; ``scheduled``: the
  pod has a node); ``"deleted": true`` when it is gone;
- ``{"kind": "event", "name", "reason", "message"}`` for each Kubernetes Event;
- ``{"kind": "trace", "pod", "mark", "time", ...}`` for each line the trainer
  SDK logged with HPO_TRACE=1 (hpo_trainer/trace.py); ``time`` is the
  trainer's own clock, ``t`` when the line was read.

A resume is a pod whose trial an Event "Resumed ... in pod P" names. Its
decision is the first sign of it: the trial's status naming the new pod, or
that Event. A promotion in place is an Event "PromotedInPlace": its decision
is the trial's status raising ``until`` while the same pod runs on.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

TRACE_PREFIX = "hpo_trainer trace "  # hpo_trainer.trace.PREFIX

# Stages of a resume, in order, as (key, what it measures from the decision).
RESUME_STAGES = (
    ("created", "pod created"),
    ("scheduled", "pod scheduled"),
    ("started", "containers started"),
    ("process", "trainer process started"),
    ("first_line", "trainer's first line"),
    ("loaded", "checkpoint loaded"),
    ("reported", "first epoch reported"),
    ("recorded", "first epoch recorded"),
)
IN_PLACE_STAGES = (
    ("seen", "decision read by the trainer"),
    ("reported", "next epoch reported"),
    ("recorded", "next epoch recorded"),
)
BARE_STAGES = (
    ("scheduled", "pod scheduled"),
    ("started", "containers started"),
    ("process", "trainer process started"),
    ("first_line", "trainer's first line"),
    ("loaded", "ready to train"),
    ("reported", "first epoch reported"),
)

_RESUMED_POD = re.compile(r"\bin pod ([a-z0-9.-]+)")  # a pod's name: DNS subdomain characters
_CONTINUES_TO = re.compile(r"continues to epoch (\d+)")


def parse_trace_line(line: str) -> dict | None:
    """The fields of one HPO_TRACE line, or None for any other line (or a damaged one)."""
    _, found, payload = line.partition(TRACE_PREFIX)
    if not found:
        return None
    try:
        fields = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(fields, dict) or not isinstance(fields.get("mark"), str):
        return None
    if not isinstance(fields.get("time"), (int, float)):
        return None
    return fields


def trial_of(pod: str) -> str:
    """The trial a trial pod belongs to: pods are named <trial>-<attempt>."""
    trial, _, attempt = pod.rpartition("-")
    if not trial or not attempt.isdigit():
        raise ValueError(f"pod name {pod!r} is not <trial>-<attempt>")
    return trial


def attempt_of(pod: str) -> int:
    return int(pod.rpartition("-")[2])


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0..100, not {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Timeline:
    """Seconds from a decision (or a bare pod's creation) to each stage reached; a stage not seen is absent."""

    trial: str
    pod: str
    decision: float
    stages: dict[str, float] = field(default_factory=dict)
    load_seconds: float | None = None


def _first(records: Iterable[dict], predicate) -> dict | None:
    return next((r for r in records if predicate(r)), None)


def _traces(records: Sequence[dict], pod: str) -> list[dict]:
    return [r for r in records if r["kind"] == "trace" and r.get("pod") == pod]


def _recorded(records: Sequence[dict], trial: str, attempt: int, epoch: int | None = None) -> dict | None:
    """First trial record that holds an observation of this attempt (of `epoch`, if given)."""
    def holds(r: dict) -> bool:
        return r["kind"] == "trial" and r["name"] == trial and any(
            a == attempt and (epoch is None or e == epoch) for e, a in r.get("observations") or ())
    return _first(records, holds)


def _trainer_stages(timeline: Timeline, traces: Sequence[dict], after_epoch: int | None = None) -> None:
    imported = _first(traces, lambda r: r["mark"] == "imported")
    if imported is not None:
        if imported.get("process_start") is not None:
            timeline.stages["process"] = imported["process_start"] - timeline.decision
        timeline.stages["first_line"] = imported["time"] - timeline.decision
    restored = _first(traces, lambda r: r["mark"] == "restored")
    if restored is not None:
        timeline.stages["loaded"] = restored["time"] - timeline.decision
        timeline.load_seconds = restored.get("seconds")
    reported = _first(traces, lambda r: r["mark"] == "reported" and (after_epoch is None or r["epoch"] > after_epoch))
    if reported is not None:
        timeline.stages["reported"] = reported["time"] - timeline.decision


def _pod_stages(timeline: Timeline, records: Sequence[dict], pod: str) -> None:
    mine = [r for r in records if r["kind"] == "pod" and r["name"] == pod and not r.get("deleted")]
    for stage, predicate in (
        ("created", lambda r: True),
        ("scheduled", lambda r: r.get("scheduled")),
        ("started", lambda r: r.get("trainer") in ("running", "terminated")),
    ):
        seen = _first(mine, predicate)
        if seen is not None:
            timeline.stages[stage] = seen["t"] - timeline.decision


def resume_timelines(records: Sequence[dict]) -> list[Timeline]:
    records = sorted(records, key=lambda r: r["t"])
    timelines = []
    seen = set()
    resumed = [(event, pod) for event in records if event["kind"] == "event" and event.get("reason") == "Resumed"
               # One trial's Event, or the experiment's for several at once: "2 trials: a (... in pod a-3); b (...)".
               for pod in _RESUMED_POD.findall(event.get("message") or "")]
    for event, pod in resumed:
        if pod in seen:  # one resume per pod, however often its Event was seen
            continue
        seen.add(pod)
        trial = trial_of(pod)
        named = _first(records, lambda r: r["kind"] == "trial" and r["name"] == trial and r.get("pod") == pod)
        decision = min(event["t"], named["t"]) if named is not None else event["t"]
        timeline = Timeline(trial, pod, decision)
        _pod_stages(timeline, records, pod)
        _trainer_stages(timeline, _traces(records, pod))
        recorded = _recorded(records, trial, attempt_of(pod))
        if recorded is not None:
            timeline.stages["recorded"] = recorded["t"] - decision
        timelines.append(timeline)
    return timelines


def in_place_timelines(records: Sequence[dict]) -> list[Timeline]:
    records = sorted(records, key=lambda r: r["t"])
    timelines = []
    promoted = set()
    for event in records:
        if event["kind"] != "event" or event.get("reason") != "PromotedInPlace":
            continue
        match = _CONTINUES_TO.search(event.get("message") or "")
        trial = event["name"]
        if match is None:
            continue
        until = int(match.group(1))
        if (trial, until) in promoted:  # one promotion per trial and epoch, however often its Event was seen
            continue
        promoted.add((trial, until))
        # The status write that raised `until` (it only grows), naming the pod that runs on.
        raised = _first(records, lambda r: r["kind"] == "trial" and r["name"] == trial and r.get("pod")
                        and r.get("until") == until)
        if raised is None:
            continue
        pod, rung = raised["pod"], raised.get("decided")
        decision = min(raised["t"], event["t"])
        timeline = Timeline(trial, pod, decision)
        traces = _traces(records, pod)
        seen = _first(traces, lambda r: r["mark"] == "decision" and r.get("epoch") == rung and r.get("until"))
        if seen is not None:
            timeline.stages["seen"] = seen["time"] - decision
        reported = _first(traces, lambda r: r["mark"] == "reported" and rung is not None and r["epoch"] == rung + 1)
        if reported is not None:
            timeline.stages["reported"] = reported["time"] - decision
        if rung is not None:
            recorded = _recorded(records, trial, attempt_of(pod), rung + 1)
            if recorded is not None:
                timeline.stages["recorded"] = recorded["t"] - decision
        timelines.append(timeline)
    return timelines


def bare_pod_timelines(records: Sequence[dict], prefix: str) -> list[Timeline]:
    """Pods named `prefix`-N started by the recorder itself: the floor a trial pod cannot beat."""
    records = sorted(records, key=lambda r: r["t"])
    timelines = []
    created = {}
    for r in records:
        if r["kind"] == "pod" and r["name"].startswith(prefix) and not r.get("deleted"):
            created.setdefault(r["name"], r["t"])
    for pod, t in created.items():
        timeline = Timeline(trial="", pod=pod, decision=t)
        _pod_stages(timeline, records, pod)
        timeline.stages.pop("created", None)
        _trainer_stages(timeline, _traces(records, pod))
        timelines.append(timeline)
    return timelines


def epoch_seconds(records: Sequence[dict]) -> list[float]:
    """Time between consecutive epochs reported by the same trainer process (trainer's clock).

    A gap in which the trainer waited for a decision at a rung is not an epoch.
    """
    reports: dict[str, list[dict]] = {}
    waits: dict[str, list[float]] = {}
    for r in records:
        if r["kind"] == "trace" and r["mark"] == "reported":
            reports.setdefault(r["pod"], []).append(r)
        elif r["kind"] == "trace" and r["mark"] == "decision":
            waits.setdefault(r["pod"], []).append(r["time"])
    gaps = []
    for pod, marks in reports.items():
        marks.sort(key=lambda r: r["epoch"])
        for a, b in zip(marks, marks[1:]):
            waited = any(a["time"] <= w <= b["time"] for w in waits.get(pod, ()))
            if b["epoch"] == a["epoch"] + 1 and not waited:
                gaps.append(b["time"] - a["time"])
    return gaps


def stage_table(title: str, timelines: Sequence[Timeline], stages: Sequence[tuple[str, str]]) -> list[str]:
    lines = [f"{title}: {len(timelines)}",
             f"  {'seconds from the decision to':<34}{'n':>5}{'p50':>8}{'p95':>8}{'max':>8}"]
    for key, label in stages:
        values = [t.stages[key] for t in timelines if key in t.stages]
        if not values:
            lines.append(f"  {label:<34}{0:>5}{'-':>8}{'-':>8}{'-':>8}")
            continue
        lines.append(f"  {label:<34}{len(values):>5}{percentile(values, 50):>8.2f}"
                     f"{percentile(values, 95):>8.2f}{max(values):>8.2f}")
    return lines


def report(records: Sequence[dict], bare_prefix: str | None = None) -> str:
    resumes = resume_timelines(records)
    in_place = in_place_timelines(records)
    lines = stage_table("resumes (new pod, checkpoint loaded)", resumes, RESUME_STAGES)
    loads = [t.load_seconds for t in resumes if t.load_seconds is not None]
    if loads:
        lines.append(f"  checkpoint load itself: p50 {percentile(loads, 50):.3f} s, p95 {percentile(loads, 95):.3f} s")
    lines.append("")
    lines += stage_table("promotions in place (same pod)", in_place, IN_PLACE_STAGES)
    if bare_prefix:
        lines.append("")
        bare = bare_pod_timelines(records, bare_prefix)
        lines += [line.replace("from the decision to", "from creation to")
                  for line in stage_table("bare pods (same image, no operator)", bare, BARE_STAGES)]
    gaps = epoch_seconds(records)
    lines.append("")
    if gaps:
        lines.append(f"epoch time of the same trainer (between consecutive reports): n {len(gaps)}, "
                     f"p50 {percentile(gaps, 50):.3f} s, p95 {percentile(gaps, 95):.3f} s")
    else:
        lines.append("epoch time: no trainer reported two consecutive epochs")
    firsts = [t.stages["reported"] for t in resumes if "reported" in t.stages]
    if firsts and gaps:
        lines.append(f"a resume's first epoch takes {statistics.median(firsts) / statistics.median(gaps):.0f}x "
                     f"an epoch inside a run (medians)")
    return "\n".join(lines)


def compare(records: Sequence[dict], baseline: Sequence[dict], bare_prefix: str, baseline_bare_prefix: str) -> str:
    """Each stage's p50 against the same stage of a baseline recorded side by side (same machine, same time)."""
    lines = [f"  {'p50 seconds':<38}{'this':>8}{'baseline':>10}{'ratio':>8}"]

    def rows(title, ours, theirs, stages):
        lines.append(f"  {title}")
        for key, label in stages:
            a = [t.stages[key] for t in ours if key in t.stages]
            b = [t.stages[key] for t in theirs if key in t.stages]
            if a and b:
                pa, pb = percentile(a, 50), percentile(b, 50)
                ratio = f"{pa / pb:.2f}x" if pb > 0 else "-"
                lines.append(f"    {label:<36}{pa:>8.2f}{pb:>10.2f}{ratio:>8}")

    rows(f"resumes (n {len(resume_timelines(records))} against {len(resume_timelines(baseline))}), "
         f"from the decision to", resume_timelines(records), resume_timelines(baseline), RESUME_STAGES)
    rows("bare pods, from creation to", bare_pod_timelines(records, bare_prefix),
         bare_pod_timelines(baseline, baseline_bare_prefix), BARE_STAGES)
    return "\n".join(lines)
