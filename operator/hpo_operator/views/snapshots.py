"""A local run's results file, or a cluster experiment's objects, as an :class:`ExperimentSnapshot`. Pure."""

from __future__ import annotations

from typing import Any, Iterable, Optional

from hpo_operator.spec.status import HPOExperimentStatus, HPOTrialStatus
from hpo_operator.views.model import Best, ExperimentSnapshot, Point, TrialSnapshot, WarningEvent, unix_time


def from_results(doc: dict[str, Any], where: str) -> ExperimentSnapshot:
    """``doc``: ``results.json`` as ``hpo run`` writes it (older files without times or spec still load)."""
    trials = []
    for d in doc["trials"]:
        times = list(d.get("times") or [])
        times += [None] * (len(d["observations"]) - len(times))
        points = tuple(Point(int(e), None if v is None else float(v), t) for (e, v), t in zip(d["observations"], times))
        trials.append(TrialSnapshot(d["name"], int(d["id"]), d["config"], d["phase"], points, int(d.get("bracket", 0)),
                                    int(d.get("until", 0)), int(d.get("attempts", 0)), int(d.get("failures", 0)),
                                    d.get("message") or ""))
    best = doc.get("best")
    spec = doc.get("spec") or {"objective": doc["objective"]}
    return ExperimentSnapshot(
        name=doc["experiment"], where=where, phase=doc["phase"], metric=doc["objective"]["metric"],
        mode=doc["objective"]["mode"], spec=spec, trials=tuple(trials),
        best=None if not best else Best(best["trial"], best["value"], int(best["epoch"]), bool(best["complete"]),
                                        best["config"], best.get("checkpoint_dir")),
        reason=doc.get("reason"), message=doc.get("message"), started_at=doc.get("started_at"),
        elapsed_s=doc.get("elapsed_s"),
    )


def trial_from_object(obj: dict[str, Any]) -> TrialSnapshot:
    spec = obj.get("spec") or {}
    status = HPOTrialStatus.model_validate(obj.get("status") or {})
    points = tuple(Point(o["epoch"], o.get("value"), o.get("time")) for o in status.observations or [])
    return TrialSnapshot(obj["metadata"]["name"], int(spec.get("trialId", 0)), dict(spec.get("config") or {}),
                         status.phase, points, int(spec.get("bracket", 0)), status.until or 0, status.attempts,
                         status.failures, status.message or "")


def warnings_of(events: Iterable[dict[str, Any]], names: set[str], limit: int = 10) -> tuple[WarningEvent, ...]:
    """The newest ``limit`` Warning Events whose object is in ``names``, oldest first."""
    out = []
    for ev in events:
        obj = ev.get("involvedObject") or ev.get("regarding") or {}
        if ev.get("type") != "Warning" or obj.get("name") not in names:
            continue
        when = ev.get("lastTimestamp") or ev.get("eventTime") or (ev.get("metadata") or {}).get("creationTimestamp")
        out.append(WarningEvent(when or "", f"{obj.get('kind', '')}/{obj['name']}", ev.get("reason") or "",
                           ev.get("message") or ev.get("note") or "", int(ev.get("count") or 1)))
    out.sort(key=lambda w: unix_time(w.time) or 0.0)
    return tuple(out[-limit:])


def from_cluster(experiment: dict[str, Any], trials: list[dict[str, Any]],
                 events: Optional[list[dict[str, Any]]] = None) -> ExperimentSnapshot:
    """``experiment`` and ``trials`` as the API server returns them (``kubectl get -o json``)."""
    meta, spec = experiment["metadata"], experiment.get("spec") or {}
    status = HPOExperimentStatus.model_validate(experiment.get("status") or {})
    objective = spec.get("objective") or {}
    snaps = tuple(sorted((trial_from_object(t) for t in trials), key=lambda t: t.trial_id))
    best = status.best
    started = unix_time(status.start_time) or unix_time(meta.get("creationTimestamp"))
    ended = unix_time(status.completion_time)
    names = {meta["name"]} | {t.name for t in snaps}
    return ExperimentSnapshot(
        name=meta["name"], where=f"cluster {meta.get('namespace', '')}/{meta['name']}",
        phase=status.phase, metric=objective.get("metric", "objective"),
        mode=objective.get("mode", "min"), spec=spec, trials=snaps,
        best=None if not best else Best(best.trial, best.value, best.epoch, best.complete, best.config, best.checkpoint),
        reason=status.reason, message=status.message, started_at=started,
        elapsed_s=None if started is None or ended is None else ended - started,
        warnings=warnings_of(events or [], names),
    )
