"""The metrics sidecar loop: every good epoch reported once, bad lines skipped and reported, exit on its own.

The API sits behind three callables; here they are a dict standing for the
trial's status (the integration tier runs the same loop against a real API server).
"""

from __future__ import annotations

import json
import time
import os
from pathlib import Path

import pytest

from hpo_operator.sidecar.problems import problem_entry
from hpo_operator.sidecar.reporter import Sidecar, control_document, trainer_exited
from hpo_trainer.metrics import MetricsWriter
from support.status_patch import MissingList, apply_adds


class Unprocessable(Exception):
    status = 422  # what the API server answers a JSON patch appending to a list that is not there


# What the sidecar may write: its appends, its problems, and the progress columns it sends with each append.
PATHS = ("/status/observations/-", "/status/problems/-", "/status/problems", "/status/lastEpoch", "/status/lastValue")


class Status:
    """The trial's status as the sidecar sees it, applying its JSON patches (observations and problems)."""

    def __init__(self, observations=(), problems=None, fail_next=0, applied_despite_error=False):
        self.doc = {"observations": list(observations)}
        if problems is not None:
            self.doc["problems"] = list(problems)
        self.fail_next = fail_next
        self.applied_despite_error = applied_despite_error
        self.requests = 0
        self.reads = 0

    @property
    def problems(self) -> list[tuple[str, str]]:
        return [(p["reason"], p["message"]) for p in self.doc.get("problems", [])]

    def read(self) -> dict:
        self.reads += 1
        return self.copy()

    def copy(self) -> dict:
        return json.loads(json.dumps(self.doc))

    def append(self, patch: list[dict]) -> dict:
        self.requests += 1
        tests, ops = [op for op in patch if op["op"] == "test"], [op for op in patch if op["op"] != "test"]
        for test in tests:  # the API server applies a patch only if its tests hold
            assert test["path"] == "/status/runFence"
            if self.doc.get("runFence") != test["value"]:
                raise Unprocessable("the server rejected our request due to an error in our request")
        assert all(op["op"] == "add" and op["path"] in PATHS for op in ops)
        if self.fail_next:
            self.fail_next -= 1
            if self.applied_despite_error:  # the request timed out after the server applied it
                self._apply(ops)
            raise TimeoutError("read timed out")
        self._apply(ops)
        return self.copy()  # the API server answers a patch with the object

    def _apply(self, ops: list[dict]) -> None:
        """All of a patch or none of it, as the API server applies one."""
        doc = self.copy()
        json.dumps(ops, allow_nan=False)  # what the API server gets must be plain JSON
        try:
            apply_adds(doc, ops)
        except MissingList as missing:
            raise Unprocessable("the server rejected our request: add operation does not apply: doc is "
                                f"missing path: {missing}") from None
        self.doc = doc


def run_sidecar(tmp_path: Path, status: Status, lines: list[str], done_after_polls: int = 1, **kwargs) -> Sidecar:
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(line + "\n" for line in lines))
    polls = iter(range(10_000))
    sidecar = Sidecar(metrics, tmp_path / "control.json", "val_error", status.read, status.append,
                      trainer_done=lambda: next(polls) >= done_after_polls, poll_seconds=0, retry_seconds=0, **kwargs)
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
    assert (status.doc["lastEpoch"], status.doc["lastValue"]) == (3, "0.5")  # kubectl's columns, same requests


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
    assert status.doc["lastValue"] == "NaN"


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


def test_a_new_trials_first_epoch_waits_for_the_records_the_operator_writes_after_the_pod(tmp_path):
    class NotYetInitialized(Status):
        reads_before_records = 3

        def read(self):
            if self.reads_before_records:
                self.reads_before_records -= 1
                return {}  # the trial exists, its status does not yet
            return super().read()

    status = NotYetInitialized()
    run_sidecar(tmp_path, status, [line(1, 0.9)])
    assert status.doc["observations"] == [{"epoch": 1, "value": 0.9}] and status.reads_before_records == 0


def test_the_trial_is_read_only_while_the_trainer_waits_for_a_decision(tmp_path):
    # Free to train to epoch 9: each append's answer is enough, no read per poll.
    status = Status()
    status.doc.update(decidedEpoch=0, until=9)
    run_sidecar(tmp_path, status, [line(1, 0.9), line(2, 0.8)], done_after_polls=50, refresh_seconds=3600)
    assert status.reads == 1  # at start
    # At its rung (epoch 3 = until) the trainer waits: the sidecar asks until the decision is there.
    waiting = Status()
    waiting.doc.update(decidedEpoch=0, until=3)
    run_sidecar(tmp_path, waiting, [line(1, 0.9), line(2, 0.8), line(3, 0.7)], done_after_polls=50,
                refresh_seconds=3600)
    assert waiting.reads >= 49


def test_trainer_exit_is_seen_through_a_marker_or_the_process_table(tmp_path):
    marker = tmp_path / "metrics.jsonl.exit"
    proc = tmp_path / "proc"
    proc.mkdir()
    done = trainer_exited(marker, proc_root=proc)
    (proc / "42").mkdir()
    (proc / "42" / "cmdline").write_bytes(b"python\0train.py\0")
    assert not done()
    (proc / "42" / "cmdline").unlink()
    os.rmdir(proc / "42")
    assert done()  # seen, then gone

    never_seen = trainer_exited(tmp_path / "none.exit", proc_root=tmp_path / "empty")
    for _ in range(3):
        assert not never_seen()  # its image may still be pulling, however long that takes

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
    Sidecar(metrics, tmp_path / "control.json", "val_error", status.read, status.append,
            trainer_done=lambda: next(done), poll_seconds=0, attempt=3).run()
    assert status.doc["observations"] == [{"epoch": 1, "value": 0.5, "attempt": 3}]


def write_bytes(tmp_path: Path, lines: list[bytes]) -> Path:
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_bytes(b"".join(raw + b"\n" for raw in lines))
    return metrics


def sidecar_for(tmp_path: Path, status: Status, trainer_done, **kwargs) -> Sidecar:
    return Sidecar(tmp_path / "metrics.jsonl", tmp_path / "control.json", "val_error", status.read, status.append,
                   trainer_done=trainer_done, poll_seconds=0, retry_seconds=0, **kwargs)


GARBAGE = [  # every way a trainer can get a line wrong, with the reason it is recorded under
    (b"Epoch 3/10 - loss: 0.41", "not_json"),
    (b'{"val_error": 0.3}', "missing_epoch"),
    (b'{"epoch": 1, "val_error": 0.9}', "epoch_not_increasing"),  # backwards (after epoch 2)
    (b'{"epoch": 2, "val_error": 0.9}', "epoch_not_increasing"),  # repeated
    (b'{"epoch": 99, "val_loss": 0.3}', "missing_objective"),
    (b"x" * (10 * 1024 * 1024), "line_too_long"),  # a 10 MB line
    (b'{"epoch": 7\xff\xfe, "val_error": 0.1}', "not_utf8"),
    (b'\x00\x00{"epoch"\x00: 8}\x1b[31m', "not_json"),  # NUL bytes and terminal escapes
    (b'{"epoch": ' + b"9" * 5000 + b', "val_error": 0.1}', "not_json"),  # an integer of 5000 digits
    (b"[" * 100_000 + b"]" * 100_000, "not_json"),  # nested deeper than any parser recursion
    (b'{"epoch": 99999999999999999999, "val_error": 0.1}', "bad_epoch"),  # does not fit the API's integers
]


def test_garbage_never_stops_the_sidecar_every_valid_line_is_kept_and_each_problem_recorded_once(tmp_path):
    valid = [b'{"epoch": 1, "val_error": 0.9}', b'{"epoch": 2, "val_error": 0.8}',
             b'{"epoch": 3, "val_error": NaN}', b'{"epoch": 4, "val_error": Infinity}',
             b'{"epoch": 5, "val_error": -Infinity}', b'{"epoch": 6, "val_error": "nan"}']
    lines = valid[:2]
    for good in valid[2:]:  # a trainer printing the same garbage every epoch
        lines += [raw for raw, _ in GARBAGE] + [good]
    write_bytes(tmp_path, lines)
    status = Status()  # a trial from an older operator: no problems list yet
    sidecar = sidecar_for(tmp_path, status, iter([False, True]).__next__, attempt=1)
    assert sidecar.run() == 0
    assert status.doc["observations"] == [{"epoch": 1, "value": 0.9, "attempt": 1},
                                          {"epoch": 2, "value": 0.8, "attempt": 1}] + [
        {"epoch": e, "value": None, "attempt": 1} for e in (3, 4, 5, 6)]  # non-finite values rank worst
    reasons = [r for r, _ in status.problems]
    assert sorted(reasons) == sorted({reason for _, reason in GARBAGE})  # each once, not once per line
    assert status.requests == 6 + len(reasons)  # no flood of requests either
    for problem in status.doc["problems"]:
        assert problem["attempt"] == 1 and len(problem["message"]) <= 520
        assert all(c.isprintable() for c in problem["message"]), problem  # NUL and escapes are spelled out


def test_a_file_truncated_while_being_read_loses_no_epoch_and_is_reported_once(tmp_path):
    metrics = write_bytes(tmp_path, [b'{"epoch": 1, "val_error": 0.9}', b'{"epoch": 2, "val_error": 0.8}',
                                     b'{"epoch": 3, "val_error": 0.7}'])
    with metrics.open("ab") as f:
        f.write(b'{"epoch": 4, "val_')  # half written when the reader looks
    status = Status(problems=[])

    def trainer_rewrites_the_file():
        steps.append(None)
        if len(steps) == 2:  # truncated under the reader, then written again from epoch 4
            metrics.write_bytes(b'{"epoch": 4, "val_error": 0.6}\n')
        elif len(steps) == 3:
            with metrics.open("ab") as f:
                f.write(b'{"epoch": 5, "val_error": 0.5}\n')
        elif len(steps) == 4:
            metrics.write_bytes(b'{"epoch": 6, "val_error": 0.4}\n')  # and once more
        return len(steps) > 4

    steps: list = []
    assert sidecar_for(tmp_path, status, trainer_rewrites_the_file).run() == 0
    assert [o["epoch"] for o in status.doc["observations"]] == [1, 2, 3, 4, 5, 6]
    assert [r for r, _ in status.problems] == ["metrics_file_truncated"]
    assert "append one line per epoch" in status.problems[0][1]


def test_an_unreadable_metrics_file_is_reported_once_and_the_sidecar_ends_normally(tmp_path):
    (tmp_path / "metrics.jsonl").mkdir()  # reading a directory fails with an OSError on every poll
    status = Status(problems=[])
    assert sidecar_for(tmp_path, status, iter([False, False, False, True]).__next__).run() == 0
    assert [r for r, _ in status.problems] == ["metrics_file_unreadable"]


def test_a_restarted_sidecar_does_not_record_its_runs_problems_again(tmp_path):
    write_bytes(tmp_path, [b"not json"])
    earlier = [{"reason": "not_json", "message": "not_json: ...", "attempt": 2}]
    same_run = Status(problems=earlier)
    sidecar_for(tmp_path, same_run, iter([False, True]).__next__, attempt=2).run()
    assert same_run.doc["problems"] == earlier
    next_run = Status(problems=earlier)
    sidecar_for(tmp_path, next_run, iter([False, True]).__next__, attempt=3).run()
    assert [(p["reason"], p["attempt"]) for p in next_run.doc["problems"]] == [("not_json", 2), ("not_json", 3)]


@pytest.mark.parametrize("applied", [False, True])
def test_a_failed_problem_request_is_retried_without_duplicating(tmp_path, applied):
    write_bytes(tmp_path, [b"not json"])
    status = Status(problems=[], fail_next=2, applied_despite_error=applied)
    sidecar_for(tmp_path, status, iter([False, True]).__next__, attempt=1).run()
    assert [r for r, _ in status.problems] == ["not_json"]


def test_a_problem_the_api_refuses_does_not_stop_the_observations(tmp_path):
    class Refused(Exception):
        status = 422  # the server refuses the request itself: retrying cannot help

    class NoProblemsAllowed(Status):
        def append(self, patch):
            if "problems" in patch[0]["path"]:
                raise Refused("unprocessable")
            return super().append(patch)

    write_bytes(tmp_path, [b"not json", b'{"epoch": 1, "val_error": 0.5}'])
    status = NoProblemsAllowed(problems=[])
    assert sidecar_for(tmp_path, status, iter([False, True]).__next__).run() == 0
    assert [o["epoch"] for o in status.doc["observations"]] == [1]


def test_an_api_server_that_refuses_while_its_caches_fill_after_a_restart_is_waited_for(tmp_path):
    class Refused(Exception):
        def __init__(self, status):
            super().__init__(status)
            self.status = status

    class JustRestarted(Status):
        # what a restarted API server answers until its caches are filled and it serves the CRDs again
        refusals = [401, 403, 404]

        def read(self):
            if self.refusals:
                raise Refused(self.refusals.pop())
            return super().read()

    write_bytes(tmp_path, [b'{"epoch": 1, "val_error": 0.5}'])
    status = JustRestarted()
    assert sidecar_for(tmp_path, status, iter([False, True]).__next__).run() == 0
    assert [o["epoch"] for o in status.doc["observations"]] == [1]


def test_problem_messages_spell_out_control_characters_and_stay_short():
    entry = problem_entry("not_json", "line: \x00\x1b[31m" + "x" * 10_000, attempt=2)
    assert entry["message"].startswith("line: \\x00\\x1b[31m") and entry["message"].endswith("...")
    assert len(entry["message"]) < 600 and entry["attempt"] == 2


def test_once_the_operator_has_judged_the_run_over_none_of_its_epochs_land(tmp_path):
    status = Status()
    status.doc["runFence"] = 2

    def append(patch):
        after = status.append(patch)
        status.doc["runFence"] = 3  # the operator judged the run over right after epoch 1 landed
        return after

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(line(1, 0.9) + "\n" + line(2, 0.8) + "\n")
    polls = iter(range(10_000))
    sidecar = Sidecar(metrics, tmp_path / "control.json", "val_error", status.read, append,
                      trainer_done=lambda: next(polls) >= 3, poll_seconds=0, retry_seconds=0, attempt=1)
    assert sidecar.run(deadline=None) == 0  # ends quietly: its run is over
    assert status.doc["observations"] == [{"epoch": 1, "value": 0.9, "attempt": 1}]
    assert sidecar.sent == 1


def test_each_append_requires_the_fence_the_run_started_with(tmp_path):
    status = Status()
    status.doc["runFence"] = 4
    seen = []
    polls = iter(range(10_000))
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(line(1, 0.9) + "\n")
    sidecar = Sidecar(metrics, tmp_path / "control.json", "val_error", status.read,
                      lambda patch: (seen.append(patch), status.append(patch))[1],
                      trainer_done=lambda: next(polls) >= 1, poll_seconds=0, retry_seconds=0)
    assert sidecar.run(deadline=None) == 0
    assert seen[0][0] == {"op": "test", "path": "/status/runFence", "value": 4}
    assert status.doc["observations"] == [{"epoch": 1, "value": 0.9}]


def test_a_sidecar_starting_after_its_run_was_judged_over_records_nothing(tmp_path):
    # Launched under fence 4; its trainer wrote epoch 1 and crashed before the sidecar had started, and the
    # operator raised the fence to 5 and launched the retry. Taking 5 for its own, this sidecar would have
    # appended epoch 1 to the retry's records, after the retry was told to start from epoch 0.
    status = Status()
    status.doc["runFence"] = 5
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(line(1, 0.9) + "\n")
    polls = iter(range(10_000))
    sidecar = Sidecar(metrics, tmp_path / "control.json", "val_error", status.read, status.append,
                      trainer_done=lambda: next(polls) >= 1, poll_seconds=0, retry_seconds=0, attempt=1,
                      run_fence=4)
    assert sidecar.run(deadline=None) == 0
    assert status.doc["observations"] == [] and sidecar.sent == 0


def test_a_sidecar_appends_under_the_fence_its_run_was_launched_with(tmp_path):
    # The first read shows no fence on record (a stale read); the launch fence is 4 and must be the one tested.
    status = Status()

    def read():
        doc = status.read()
        status.doc["runFence"] = 4  # the operator's write lands after the sidecar's first read
        return doc

    seen = []
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(line(1, 0.9) + "\n")
    polls = iter(range(10_000))
    sidecar = Sidecar(metrics, tmp_path / "control.json", "val_error", read,
                      lambda patch: (seen.append(patch), status.append(patch))[1],
                      trainer_done=lambda: next(polls) >= 1, poll_seconds=0, retry_seconds=0, run_fence=4)
    assert sidecar.run(deadline=None) == 0
    assert seen[0][0] == {"op": "test", "path": "/status/runFence", "value": 4}
    assert status.doc["observations"] == [{"epoch": 1, "value": 0.9}]


def test_observations_carry_the_time_the_trainer_wrote_them(tmp_path):
    status = Status()
    run_sidecar(tmp_path, status, [json.dumps({"epoch": 1, "val_error": 0.5, "time": 1718000000.25}),
                                   line(2, 0.4)])
    # the trainer's clock (what hpo plot draws against); a line without one records none
    assert status.doc["observations"] == [{"epoch": 1, "value": 0.5, "time": 1718000000.25},
                                          {"epoch": 2, "value": 0.4}]


def test_a_sidecar_whose_trainer_never_showed_ends_once_the_operator_fences_its_run(tmp_path):
    # The trainer ended unseen (or never started): the operator judges the run from its container's state
    # and raises the fence; the sidecar, still waiting for a trainer, ends on that instead of waiting forever.
    status = Status()
    status.doc["runFence"] = 0
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("")
    reads = []

    def read():
        reads.append(1)
        if len(reads) == 3:
            status.doc["runFence"] = 1
        return status.read()

    sidecar = Sidecar(metrics, tmp_path / "control.json", "val_error", read, status.append,
                      trainer_done=lambda: False, poll_seconds=0, retry_seconds=0, refresh_seconds=0, run_fence=0)
    assert sidecar.run(deadline=time.monotonic() + 10) == 0
    assert len(reads) == 3 and status.doc["observations"] == []
