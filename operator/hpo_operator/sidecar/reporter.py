"""The metrics sidecar: trainer metrics file -> the trial's ``status.observations``.

One JSON-patch request per epoch (``add /status/observations/-``), never a
read-modify-write, so it cannot race the operator's status writes. On start
it reads the observations on record and skips what is already there, so a
new run's lines for epochs already on record are skipped (and reported: the
trainer did not resume where the last run ended). It also carries the
operator's decision at rung epochs (``status.until``/``status.decidedEpoch``)
into the control file the waiting trainer reads (promote in place). It reads
the trial only while the trainer waits for a decision (and every few seconds
otherwise): each append's answer already carries the status.

Whatever the trainer writes, the loop goes on: a bad line is skipped, and each
kind of problem is recorded once per run in ``status.problems`` (see
``problems.py``), never as an Event: the sidecar may only write its trial's status.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from hpo_trainer import contract
from hpo_trainer.metrics import MetricLineError, MetricRecord, MetricsReader

from hpo_operator.resources import text_value
from hpo_operator.sidecar.problems import (
    EPOCHS_REPEATED, FILE_TRUNCATED, FILE_UNREADABLE, problem_entry, problem_patch, recorded,
)

log = logging.getLogger("hpo.sidecar")


def observation_patch(record: MetricRecord, attempt: Optional[int] = None, fence: Optional[int] = None
                      ) -> list[dict]:
    """The append, and the trial's progress columns (``lastEpoch``, ``lastValue``) in the same request: a
    trial's progress costs no write of the operator's.

    ``fence``: the trial's ``status.runFence`` when this run started; the append then only applies while
    it is unchanged (the operator raises it when it judges the run over)."""
    value = record.value if math.isfinite(record.value) else None  # JSON has no NaN: null ranks worst
    observation = {"epoch": record.epoch, "value": value}
    if record.time is not None:
        observation["time"] = record.time
    if attempt is not None:
        observation["attempt"] = attempt
    guard = [] if fence is None else [{"op": "test", "path": "/status/runFence", "value": fence}]
    return guard + [{"op": "add", "path": "/status/observations/-", "value": observation},
                    {"op": "add", "path": "/status/lastEpoch", "value": record.epoch},
                    {"op": "add", "path": "/status/lastValue", "value": text_value(record.value)}]


class RunFenced(Exception):
    """The operator has judged this run over (``status.runFence`` moved on): nothing more of it is recorded."""


def control_document(status: dict) -> Optional[dict]:
    """The control file's content for the operator's latest decision, or None if none yet."""
    decided, until = status.get("decidedEpoch"), status.get("until")
    if not isinstance(decided, int) or not isinstance(until, int) or decided <= 0:
        return None
    return {contract.CONTROL_DECIDED_EPOCH: decided, contract.CONTROL_UNTIL: until}


def awaiting_decision(status: dict, last_epoch: int) -> bool:
    """The trainer has reported the last epoch it may train (a rung) and waits for the operator's word."""
    until, decided = status.get("until"), status.get("decidedEpoch")
    return isinstance(until, int) and last_epoch >= until and (decided if isinstance(decided, int) else 0) < last_epoch


def write_control(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


@dataclass
class Sidecar:
    """The loop, with the API behind callables so it is testable without a cluster."""

    metrics_file: Path
    control_file: Path
    objective: str
    read_status: Callable[[], dict]
    append: Callable[[list[dict]], Optional[dict]]  # one JSON patch on the trial's status; the status after it
    trainer_done: Callable[[], bool]
    poll_seconds: float = 0.2
    refresh_seconds: float = 5.0  # how stale the status may get while no decision is awaited
    retry_seconds: float = 1.0
    attempt: Optional[int] = None
    run_fence: Optional[int] = None  # status.runFence this run was launched under (HPO_RUN_FENCE)
    reported: set = field(default_factory=set)  # problem reasons this run has recorded
    sent: int = 0
    last_epoch: int = 0  # the latest epoch on record
    repeated: int = 0  # lines for epochs on record that this run trained again
    fence: Optional[int] = None  # the fence its appends test (None: a record that has none)

    def run(self, deadline: Optional[float] = None) -> int:
        status = self._with_retries(self.read_status)
        while not isinstance(status.get("observations"), list):
            # The operator writes a new trial's empty records before its first pod; should a pod ever
            # come first, appending to records that are not there would fail: wait for them.
            if deadline is not None and time.monotonic() > deadline:
                return 1
            time.sleep(self.poll_seconds)
            status = self._with_retries(self.read_status)
        # A restarted sidecar container (same run) does not record its run's problems again.
        self.reported |= {p.get("reason") for p in status.get("problems") or []
                          if isinstance(p, dict) and p.get("attempt") == self.attempt}
        last = self.last_epoch = max([o["epoch"] for o in status.get("observations") or []], default=0)
        on_record = status.get("runFence") if isinstance(status.get("runFence"), int) else None
        if self.run_fence is not None and on_record is not None and on_record != self.run_fence:
            # Judged over before this sidecar got going (its trainer crashed, its pod was deleted): the
            # records belong to the next run now.
            log.warning("The operator has judged this run (attempt %s) over before it started reporting; "
                        "nothing of it is recorded", self.attempt)
            return 0
        self.fence = self.run_fence if self.run_fence is not None else on_record
        reader = MetricsReader(self.metrics_file, self.objective, last_epoch=last or None)
        written_control = None
        read_at = time.monotonic()
        while True:
            finished = self.trainer_done()  # checked before the read: lines written before exit are drained
            for item in self._poll(reader):
                if isinstance(item, MetricLineError):
                    if item.reason.value == "epoch_not_increasing" and last and not self.sent:
                        # An epoch already on record, trained again: the trainer did not resume
                        # from its checkpoint (or lost it). Skipped, and reported once at the end.
                        self.repeated += 1
                        continue
                    self.report(item.reason.value, str(item))
                    continue
                try:
                    status = self._send(item) or status
                except RunFenced:
                    log.warning("The operator has judged this run (attempt %s) over; its epoch %d and later "
                                "are not recorded", self.attempt, item.epoch)
                    return 0
            if awaiting_decision(status, self.last_epoch) or time.monotonic() - read_at >= self.refresh_seconds:
                status, read_at = self._with_retries(self.read_status), time.monotonic()
                if self.fenced(status):
                    # The operator judged the run over from its pod (a trainer that ended unseen, or never
                    # started in time): nothing more of it is recorded.
                    log.warning("The operator has judged this run (attempt %s) over; the sidecar ends", self.attempt)
                    return 0
            doc = control_document(status)
            if doc is not None and doc != written_control:
                write_control(self.control_file, doc)
                written_control = doc
            if finished:
                if self.repeated:
                    self.report(EPOCHS_REPEATED, f"this run trained {self.repeated} epoch(s) again that "
                                f"were already on record (up to epoch {last}): the trainer resumed from an "
                                "earlier checkpoint or none; save a checkpoint every epoch and restore it "
                                "at start (hpo_trainer.torch_state.save/restore) to avoid repeating work")
                return 0
            if deadline is not None and time.monotonic() > deadline:
                return 1
            time.sleep(self.poll_seconds)

    def fenced(self, status: dict) -> bool:
        """The trial's ``runFence`` has moved on from this run's."""
        return self.fence is not None and isinstance(status.get("runFence"), int) and status["runFence"] != self.fence

    def _poll(self, reader: MetricsReader) -> list:
        """New lines of the metrics file; a file that cannot be read now is reported and read again later."""
        restarts = reader.tail.restarts
        try:
            items = reader.poll()
        except OSError as err:
            self.report(FILE_UNREADABLE, f"cannot read the metrics file {self.metrics_file}: {err}")
            return []
        if reader.tail.restarts > restarts:
            self.report(FILE_TRUNCATED, f"the metrics file {self.metrics_file.name} was truncated or replaced "
                        "while being read; it is read again from its start and epochs already recorded are "
                        "skipped; append one line per epoch (hpo_trainer.report) instead of rewriting the file")
        return items

    def report(self, reason: str, message: str) -> None:
        """Record a problem in the trial's status, once per reason per run; the operator posts the Event.

        Best effort: a problem that cannot be recorded is logged, and the loop goes on.
        """
        if reason in self.reported:
            return
        self.reported.add(reason)
        log.warning("Metrics problem attempt=%s reason=%s: %s", self.attempt, reason, message[:300])
        entry = problem_entry(reason, message, self.attempt)
        try:
            self._with_retries(lambda: self.append(problem_patch(self.read_status(), entry)),
                               already_done=lambda: recorded(self._with_retries(self.read_status), reason,
                                                             self.attempt))
        except Exception as err:  # reporting must never stop the observations
            log.warning("Could not record problem reason=%s: %s", reason, err)

    def _send(self, record: MetricRecord) -> Optional[dict]:
        """Append one observation exactly once: after a failed request, look before sending again
        (a request that timed out may still have been applied). The status after it, when the answer came."""
        def on_record() -> bool:
            status = self._with_retries(self.read_status)
            if any(o.get("epoch") == record.epoch for o in status.get("observations") or []):
                return True
            if self.fence is not None and status.get("runFence") != self.fence:
                raise RunFenced()
            return False

        try:
            after = self._with_retries(lambda: self.append(observation_patch(record, self.attempt, self.fence)),
                                       already_done=on_record)
        except Exception as err:
            # A failed runFence test is answered 422 like any refused patch: look whether the fence moved on
            # (on_record raises RunFenced then); any other refusal stands.
            if getattr(err, "status", None) != 422 or self.fence is None or not on_record():
                raise
            after = None
        self.sent += 1
        self.last_epoch = max(self.last_epoch, record.epoch)
        return after

    def _with_retries(self, call, attempts: int = 30, already_done: Optional[Callable[[], bool]] = None):
        """``call()``, retried on transient errors; before each retry, ``already_done()`` may say it is not needed."""
        for i in range(attempts):
            if i and already_done is not None and already_done():
                return None
            try:
                return call()
            except Exception as err:  # API server restarts, conflicts, timeouts: wait and retry
                if i == attempts - 1 or not _transient(err):
                    raise
                time.sleep(self.retry_seconds)


def _transient(err: Exception) -> bool:
    # 401, 403 and 404 too: an API server that has just restarted refuses requests until its token and
    # RBAC caches are filled, and answers 404 for custom resources until it serves their CRDs again; a
    # real lack of permission (or a deleted trial, whose pod goes with it) still ends it, after the retries.
    status = getattr(err, "status", None)
    return status is None or status in (0, 401, 403, 404, 409, 429, 500, 502, 503, 504)


def trainer_exited(exit_marker: Path, proc_root: Path = Path("/proc"), watch_processes: bool = True
                   ) -> Callable[[], bool]:
    """True once the trainer has ended.

    Either the runner (or test double) wrote ``exit_marker``, or, in a pod with
    a shared process namespace, the trainer process was seen and is gone. A
    trainer not seen yet is still to come, however long its image takes to pull:
    the sidecar waits for it. One that ends unseen (it could not start, or ran
    for less than a poll) is judged by the operator from its container's state,
    which then raises the run's fence, and the sidecar ends on that.
    """
    me = os.getpid()
    seen: set[int] = set()

    def others() -> set[int]:
        pids = set()
        for entry in proc_root.iterdir() if proc_root.exists() else []:
            if entry.name.isdigit() and int(entry.name) not in (1, me):
                try:
                    cmd = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if cmd and b"hpo_operator.sidecar" not in cmd and b"/pause" not in cmd:
                    pids.add(int(entry.name))
        return pids

    def done() -> bool:
        if exit_marker.exists():
            return True
        if not watch_processes:
            return False
        current = others()
        if current:
            seen.update(current)
            return False
        return bool(seen)

    return done
