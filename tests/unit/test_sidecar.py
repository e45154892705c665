"""The metrics sidecar loop: every good epoch reported once, bad lines skipped and reported, exit on its own.

The API sits behind three callables; here they are a dict standing for the
trial's status (the integration tier runs the same loop against a real API server).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hpo_operator.sidecar.reporter import Sidecar, control_document, trainer_exited
from hpo_trainer.metrics import MetricsWriter


class Status:
    """The trial's status as the sidecar sees it, applying its JSON patches."""

    def __init__(self, observations=(), fail_next=0, applied_despite_error=False):
        self.doc = {"observations": list(observations)}
        self.fail_next = fail_next
        self.applied_despite_error = applied_despite_error
        self.problems: list[tuple[str, str]] = []

    def read(self) -> dict:
        return json.loads(json.dumps(self.doc))

    def append(self, patch: list[dict]) -> None:
        assert patch[0]["op"] == "add" and patch[0]["path"] == "/status/observations/-"
        if self.fail_next:
            self.fail_next -= 1
            if self.applied_despite_error:  # the request timed out after the server applied it
                self.doc["observations"].append(patch[0]["value"])
            raise TimeoutError("read timed out")
        self.doc["observations"].append(patch[0]["value"])

    def report(self, reason: str, message: str) -> None:
        self.problems.append((reason, message))


def run_sidecar(tmp_path: Path, status: Status, lines: list[str], done_after_polls: int = 1) -> Sidecar:
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(line + "\n" for line in lines))
    polls = iter(range(10_000))
    sidecar = Sidecar(metrics, tmp_path / "control.json", "val_error", status.read, status.append, status.report,
                      trainer_done=lambda: next(polls) >= done_after_polls, poll_seconds=0, retry_seconds=0)
    assert sidecar.run(deadline=None) == 0
    return sidecar


def line(epoch, value) -> str:
    return json.dumps({"epoch": epoch, "val_error": value})


def test_every_epoch_is_appended_in_order(tmp_path):
    status = Status()
    sidecar = run_sidecar(tmp_path, status, [line(1, 0.9), line(2, 0.7), line(3, 0.5)])
    assert status.doc["observations"] == [{"epoch": 1, "value": 0.9}, {"epoch": 2, "value": 0.7},
                                          {"epoch": 3, "value": 0.5}]
    assert sidecar.sent == 3


def test_bad_lines_are_skipped_and_reported_once_per_reason(tmp_path):
    status = Status()
    run_sidecar(tmp_path, status, [line(1, 0.9), "not json", "also not json", json.dumps({"epoch": 2}),
                                   line(2, 0.8)])
    assert [o["epoch"] for o in status.doc["observations"]] == [1, 2]
    reasons = [r for r, _ in status.problems]
    assert len(reasons) == len(set(reasons)) == 2  # invalid JSON once, missing objective once
    assert any("val_error" in message for _, message in status.problems)


def test_nan_is_sent_as_null(tmp_path):
    status = Status()
    run_sidecar(tmp_path, status, ['{"epoch": 1, "val_error": NaN}'])
    assert status.doc["observations"] == [{"epoch": 1, "value": None}]


@pytest.mark.parametrize("applied", [False, True])
def test_a_failed_request_is_retried_without_duplicating(tmp_path, applied):
    status = Status(fail_next=2, applied_despite_error=applied)
    run_sidecar(tmp_path, status, [line(1, 0.9), line(2, 0.8)])
    assert [o["epoch"] for o in status.doc["observations"]] == [1, 2]


def test_decisions_reach_the_trainer_through_the_control_file(tmp_path):
    status = Status()
    status.doc.update(decidedEpoch=3, until=9)
    run_sidecar(tmp_path, status, [line(1, 0.9)])
    assert json.loads((tmp_path / "control.json").read_text()) == {"decided_epoch": 3, "until": 9}
    assert control_document({"decidedEpoch": 0, "until": 3}) is None  # nothing decided yet


def test_trainer_exit_is_seen_through_a_marker_or_the_process_table(tmp_path):
    marker = tmp_path / "metrics.jsonl.exit"
    proc = tmp_path / "proc"
    proc.mkdir()
    now = [0.0]
    done = trainer_exited(marker, proc_root=proc, grace_seconds=10, clock=lambda: now[0])
    (proc / "42").mkdir()
    (proc / "42" / "cmdline").write_bytes(b"python\0train.py\0")
    assert not done()
    (proc / "42" / "cmdline").unlink()
    os.rmdir(proc / "42")
    assert done()  # seen, then gone

    never_seen = trainer_exited(tmp_path / "none.exit", proc_root=tmp_path / "empty", grace_seconds=10,
                                clock=lambda: now[0])
    assert not never_seen()  # the trainer may still be starting
    now[0] = 11.0
    assert never_seen()  # a trainer that never showed up had already exited (a bad command, say)

    marker.write_text("0")
    assert trainer_exited(marker, proc_root=proc)()


def test_a_run_that_trains_recorded_epochs_again_is_reported_and_nothing_is_sent_twice(tmp_path):
    # A new pod's metrics file starts empty, so lines for epochs on record mean the
    # trainer did not resume from the checkpoint of the last recorded epoch.
    status = Status(observations=[{"epoch": 1, "value": 0.9}, {"epoch": 2, "value": 0.7}])
    run_sidecar(tmp_path, status, [line(1, 0.9), line(2, 0.7), line(3, 0.6)])
    assert [o["epoch"] for o in status.doc["observations"]] == [1, 2, 3]
    assert [r for r, _ in status.problems] == ["epochs_repeated"]
    assert "restore it at start" in status.problems[0][1]


def test_observations_name_the_run_that_reported_them(tmp_path):
    status = Status()
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(line(1, 0.5) + "\n")
    done = iter([False, True])
    Sidecar(metrics, tmp_path / "control.json", "val_error", status.read, status.append, status.report,
            trainer_done=lambda: next(done), poll_seconds=0, attempt=3).run()
    assert status.doc["observations"] == [{"epoch": 1, "value": 0.5, "attempt": 3}]
