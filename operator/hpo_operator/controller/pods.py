"""What a trial pod's status says about its run, as pure functions: ended or not, how, and what keeps it
from starting. Pods are read in their compact form (``compact_pod``), which the operator caches by the
thousand."""

from __future__ import annotations

import functools

from datetime import datetime, timedelta, timezone
from typing import NamedTuple, Optional

from hpo_operator.resources import PodPhase

# The last output a failed trainer leaves in its terminated state (FallbackToLogsOnError keeps 2 KiB).
OUTPUT_CHARS = 2048
# A waiting or scheduling message is Kubernetes' own sentence; a long one is cut.
MESSAGE_CHARS = 500
# A trainer whose container ended while its pod still runs (the sidecar never saw its process: it could not
# start, or ran for less than a poll) is judged on its container's state once this long has passed; a
# sidecar that did see it ends within a second of it and the pod ends with it.
TRAINER_GONE_GRACE = timedelta(seconds=30)
# Waiting reasons that keep a container from ever starting without a change by the user.
START_PROBLEMS = ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
                  "CreateContainerConfigError", "CreateContainerError", "RunContainerError")


def compact_pod(pod: dict) -> dict:
    """The part of a pod (as the API returns it) that decides a run's outcome and shows what keeps it from
    starting."""
    status = pod.get("status") or {}
    meta = pod.get("metadata") or {}
    containers = []
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if state.get("terminated"):
            term = state["terminated"]
            kept = {k: term.get(k) for k in ("exitCode", "reason", "finishedAt")}
            if term.get("exitCode") and term.get("message"):
                kept["message"] = term["message"][-OUTPUT_CHARS:]
            containers.append({"name": cs.get("name"), "state": {"terminated": kept}})
        elif state.get("running") is not None:
            containers.append({"name": cs.get("name"), "state": {"running": {}}})
        elif state.get("waiting") is not None:
            waiting = state["waiting"]
            containers.append({"name": cs.get("name"), "state": {"waiting": {
                "reason": waiting.get("reason"), "message": (waiting.get("message") or "")[:MESSAGE_CHARS]}}})
    out = {"status": {"phase": status.get("phase"), "reason": status.get("reason"), "containerStatuses": containers},
           "deleting": bool(meta.get("deletionTimestamp")), "created": meta.get("creationTimestamp")}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            out["unschedulable"] = {"reason": cond.get("reason") or "Unschedulable",
                                    "message": (cond.get("message") or "")[:MESSAGE_CHARS]}
    return out


class RunOutcome(NamedTuple):
    ok: bool
    message: str
    output: str = ""  # the trainer's last output, when it failed
    live: bool = False  # the pod still runs (its sidecar, or a trainer that never started): fence, then delete


class PodProblem(NamedTuple):
    reason: str  # Kubernetes' own: ErrImagePull, Unschedulable, CreateContainerConfigError, ...
    message: str
    container: Optional[str] = None


def _state(pod: dict, container: str) -> dict:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == container:
            return cs.get("state") or {}
    return {}


@functools.lru_cache(maxsize=16384)  # every step reads the same pods' timestamps again
def _time(text: Optional[str]) -> Optional[datetime]:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def started(pod: dict, trainer: str) -> bool:
    """The trainer's container has run (a pod reported Running without container states counts)."""
    phase = (pod.get("status") or {}).get("phase")
    if phase in (None, PodPhase.PENDING):
        return False
    return "waiting" not in _state(pod, trainer)


def pod_problem(pod: Optional[dict], trainer: str) -> Optional[PodProblem]:
    """What keeps a pod from starting its containers, in Kubernetes' words; None if nothing does (yet)."""
    if pod is None:
        return None
    if pod.get("unschedulable"):
        return PodProblem(pod["unschedulable"]["reason"], pod["unschedulable"]["message"] or "not schedulable")
    statuses = sorted((pod.get("status") or {}).get("containerStatuses") or [], key=lambda cs: cs.get("name") != trainer)
    for cs in statuses:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in START_PROBLEMS:
            return PodProblem(waiting["reason"], waiting.get("message") or waiting["reason"], cs.get("name"))
    return None


def run_outcome(pod: Optional[dict], trainer: str, now: datetime, start_timeout: Optional[float] = None
                ) -> Optional[RunOutcome]:
    """How a run ended, or None while it runs (or may still start)."""
    if pod is None:
        return RunOutcome(False, "pod disappeared (deleted or evicted)")
    status = pod.get("status") or {}
    term = _state(pod, trainer).get("terminated")
    output = (term or {}).get("message") or ""
    if status.get("phase") == PodPhase.SUCCEEDED:
        return RunOutcome(True, "")
    if status.get("phase") == PodPhase.FAILED:
        reasons = []
        for cs in status.get("containerStatuses") or []:
            ended = (cs.get("state") or {}).get("terminated") or {}
            if ended and ended.get("exitCode", 0) != 0:
                reasons.append(f"{cs['name']} exited {ended.get('exitCode')} ({ended.get('reason') or 'Error'})")
        return RunOutcome(False, "; ".join(reasons) or status.get("reason") or "pod failed", output)
    finished = _time((term or {}).get("finishedAt"))
    if term and finished and now - finished >= TRAINER_GONE_GRACE:
        code = term.get("exitCode")
        message = "" if code == 0 else f"{trainer} exited {code} ({term.get('reason') or 'Error'})"
        return RunOutcome(code == 0, message, output, live=True)
    created = _time(pod.get("created"))
    if start_timeout is not None and created and not started(pod, trainer) \
            and (now - created).total_seconds() >= start_timeout:
        problem = pod_problem(pod, trainer)
        why = f"{problem.reason}: {problem.message}" if problem else f"pod {status.get('phase') or PodPhase.PENDING}"
        return RunOutcome(False, f"the trainer did not start within {start_timeout:g} s ({why})", live=True)
    return None


def failed_pod_kept(pod: Optional[dict]) -> bool:
    """A pod whose run failed and whose containers have all ended: kept for ``kubectl logs`` until its trial
    runs again (it holds no node resources)."""
    return pod is not None and not pod.get("deleting") and (pod.get("status") or {}).get("phase") == PodPhase.FAILED


def output_tail(output: str, chars: int) -> str:
    """The last ``chars`` characters of a trainer's output, from a line start where one is near."""
    output = output.rstrip()
    if len(output) <= chars:
        return output
    tail = output[-chars:]
    cut = tail.find("\n")
    return "..." + (tail[cut:] if 0 <= cut < chars // 4 else tail)
