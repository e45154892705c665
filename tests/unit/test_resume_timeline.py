"""bench/resume_timeline.py: stage times of resumes, promotions in place and bare pods from a recording.

The recording below is written by hand in the shape bench/resume_latency.py
records (its own summaries of real API objects are tested at the end), with
round numbers so every expected figure can be checked by eye.
"""

import json
import sys

import numpy as np
import pytest

from support.paths import REPO

sys.path.insert(0, str(REPO / "bench"))

import resume_latency  # noqa: E402
import resume_timeline as rt  # noqa: E402


def trial(t, name, pod, until, decided, observations, phase="Running"):
    return {"t": t, "kind": "trial", "name": name, "phase": phase, "pod": pod, "until": until, "decided": decided,
            "observations": observations}


def pod(t, name, scheduled=False, trainer="waiting", deleted=False):
    record = {"t": t, "kind": "pod", "name": name, "scheduled": scheduled, "trainer": trainer}
    return {**record, "deleted": True} if deleted else record


def event(t, name, reason, message):
    return {"t": t, "kind": "event", "name": name, "reason": reason, "message": message}


def trace(t, pod_name, mark, time, **fields):
    return {"t": t, "kind": "trace", "pod": pod_name, "mark": mark, "time": time, **fields}


RECORDING = [
    # A resume with every stage seen: trial 3's second run, epochs 2..2.
    trial(100.50, "exp-0003", "exp-0003-2", 2, 1, [[1, 1]]),
    event(100.52, "exp-0003", "Resumed", "epochs 2..2 in pod exp-0003-2"),
    pod(100.55, "exp-0003-2"),
    pod(100.60, "exp-0003-2", scheduled=True),
    pod(101.50, "exp-0003-2", scheduled=True, trainer="running"),
    trace(103.05, "exp-0003-2", "imported", 103.00, process_start=101.40),
    trace(103.25, "exp-0003-2", "restored", 103.20, epoch=1, seconds=0.02),
    trace(103.55, "exp-0003-2", "reported", 103.50, epoch=2),
    trial(103.80, "exp-0003", "exp-0003-2", 2, 1, [[1, 1], [2, 2]]),
    pod(104.00, "exp-0003-2", scheduled=True, trainer="terminated"),
    pod(104.20, "exp-0003-2", scheduled=True, trainer="terminated", deleted=True),
    # A resume whose Event came before the status (decision = the Event) and whose log was lost.
    event(150.00, "exp-0004", "Resumed", "epochs 3..4 in pod exp-0004-3"),
    trial(150.10, "exp-0004", "exp-0004-3", 4, 2, [[1, 1], [2, 2]]),
    pod(150.30, "exp-0004-3", scheduled=True),
    # A promotion in place: trial 5 keeps pod exp-0005-1 from rung 2 to epoch 4.
    trace(199.05, "exp-0005-1", "reported", 199.00, epoch=1),
    trace(199.25, "exp-0005-1", "reported", 199.20, epoch=2),
    trial(199.30, "exp-0005", "exp-0005-1", 2, 1, [[1, 1], [2, 1]]),
    trial(200.00, "exp-0005", "exp-0005-1", 4, 2, [[1, 1], [2, 1]]),
    event(200.10, "exp-0005", "PromotedInPlace", "continues to epoch 4 without a restart"),
    trace(200.35, "exp-0005-1", "decision", 200.30, epoch=2, until=4),
    trace(200.65, "exp-0005-1", "reported", 200.60, epoch=3),
    trial(200.90, "exp-0005", "exp-0005-1", 4, 2, [[1, 1], [2, 1], [3, 1]]),
    trace(200.85, "exp-0005-1", "reported", 200.80, epoch=4),
    # A bare pod of the same image.
    pod(10.00, "bare-0"),
    pod(10.10, "bare-0", scheduled=True),
    pod(11.00, "bare-0", scheduled=True, trainer="running"),
    trace(12.05, "bare-0", "imported", 12.00, process_start=10.90),
    trace(12.25, "bare-0", "restored", 12.20, epoch=0, seconds=0.0),
]


def test_a_resume_is_timed_from_its_decision_through_every_stage():
    first, second = rt.resume_timelines(RECORDING)
    assert (first.trial, first.pod, first.decision) == ("exp-0003", "exp-0003-2", 100.50)
    assert first.stages == pytest.approx({"created": 0.05, "scheduled": 0.10, "started": 1.00, "process": 0.90,
                                          "first_line": 2.50, "loaded": 2.70, "reported": 3.00, "recorded": 3.30})
    assert first.load_seconds == 0.02
    # The Event came first; stages not seen (the log was lost, no observation) are absent, not zero.
    assert second.decision == 150.00
    assert second.stages == pytest.approx({"created": 0.30, "scheduled": 0.30})


def test_a_promotion_in_place_is_timed_from_the_status_that_raised_until():
    (timeline,) = rt.in_place_timelines(RECORDING)
    assert (timeline.trial, timeline.pod, timeline.decision) == ("exp-0005", "exp-0005-1", 200.00)
    assert timeline.stages == pytest.approx({"seen": 0.30, "reported": 0.60, "recorded": 0.90})


def test_a_bare_pod_is_timed_from_its_creation():
    (timeline,) = rt.bare_pod_timelines(RECORDING, "bare-")
    assert timeline.stages == pytest.approx({"scheduled": 0.10, "started": 1.00, "process": 0.90,
                                             "first_line": 2.00, "loaded": 2.20})


def test_epoch_time_leaves_out_the_wait_for_a_decision():
    # Trial 5 reported 1 -> 2 (0.2 s), waited at the rung, then 3 -> 4 (0.2 s); 2 -> 3 spans the wait.
    assert rt.epoch_seconds(RECORDING) == pytest.approx([0.20, 0.20])


@pytest.mark.parametrize("values", [[3.0], [1.0, 2.0], [5.0, 1.0, 4.0, 2.0, 3.0], list(np.linspace(0, 7, 31))])
@pytest.mark.parametrize("q", [0, 50, 95, 100])
def test_percentile_matches_numpy(values, q):
    assert rt.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_refuses_nonsense():
    with pytest.raises(ValueError, match="no values"):
        rt.percentile([], 50)
    with pytest.raises(ValueError, match="0..100"):
        rt.percentile([1.0], 101)


def test_the_report_prints_p50_p95_per_stage():
    text = rt.report(RECORDING, bare_prefix="bare-")
    assert "resumes (new pod, checkpoint loaded): 2" in text
    # first epoch reported: one value (3.00 s); pod created: two (0.05, 0.30).
    assert any(line.split()[-4:] == ["1", "3.00", "3.00", "3.00"] for line in text.splitlines()
               if line.strip().startswith("first epoch reported"))
    created = next(line for line in text.splitlines() if line.strip().startswith("pod created"))
    assert created.split()[-4:] == ["2", "0.18", "0.29", "0.30"]
    assert "promotions in place (same pod): 1" in text and "bare pods (same image, no operator): 1" in text
    assert "epoch time of the same trainer (between consecutive reports): n 2, p50 0.200 s" in text


def test_trace_lines_the_sdk_writes_are_the_lines_the_bench_reads(monkeypatch, capsys):
    from hpo_trainer import trace

    monkeypatch.setenv("HPO_TRACE", "1")
    trace.mark("restored", epoch=9, seconds=0.04)
    line = capsys.readouterr().err.strip()
    assert rt.TRACE_PREFIX == trace.PREFIX
    fields = rt.parse_trace_line("2026-12-01T14:00:00.000Z stderr F " + line)  # as a log line may be prefixed
    assert fields["mark"] == "restored" and fields["epoch"] == 9 and fields["time"] > 1.7e9
    for other in ("plain output", trace.PREFIX + "{not json", trace.PREFIX + '{"mark": 3, "time": 1}',
                  trace.PREFIX + '{"mark": "x"}'):
        assert rt.parse_trace_line(other) is None


def test_the_trace_is_silent_unless_asked_for(monkeypatch, capsys):
    from hpo_trainer import trace

    monkeypatch.delenv("HPO_TRACE", raising=False)
    trace.mark("imported")
    monkeypatch.setenv("HPO_TRACE", "0")
    trace.mark("imported")
    assert capsys.readouterr().err == ""
    start = trace.process_start_time()
    assert start is None or 0 < __import__("time").time() - start < 24 * 3600


def test_records_summarise_api_objects_as_the_timeline_reads_them():
    pod_obj = {"metadata": {"name": "exp-0003-2"}, "spec": {"nodeName": "node-1"},
               "status": {"phase": "Running", "containerStatuses": [
                   {"name": "hpo-sidecar", "state": {"running": {}}},
                   {"name": "trainer", "state": {"terminated": {"exitCode": 0}}}]}}
    assert resume_latency.pod_record(pod_obj) == {"kind": "pod", "name": "exp-0003-2", "scheduled": True,
                                                  "trainer": "terminated", "phase": "Running"}
    pending = {"metadata": {"name": "p-1"}, "spec": {}, "status": {"phase": "Pending"}}
    assert resume_latency.pod_record(pending, deleted=True)["deleted"] is True
    assert resume_latency.pod_record(pending)["trainer"] == "waiting"
    trial_obj = {"metadata": {"name": "exp-0003"}, "status": {
        "phase": "Running", "pod": "exp-0003-2", "until": 2, "decidedEpoch": 1,
        "observations": [{"epoch": 1, "value": 0.5, "attempt": 1}]}}
    expected = trial(0, "exp-0003", "exp-0003-2", 2, 1, [[1, 1]])
    del expected["t"]  # the recorder stamps it
    assert resume_latency.trial_record(trial_obj) == expected
    event_obj = {"involvedObject": {"name": "exp-0003"}, "reason": "Resumed", "message": "epochs 2..2 in pod x-2"}
    assert resume_latency.event_record(event_obj) == {"kind": "event", "name": "exp-0003", "reason": "Resumed",
                                                      "message": "epochs 2..2 in pod x-2"}


def test_analyse_prints_each_experiment_of_a_recording(tmp_path, capsys, monkeypatch):
    marks = [{"t": 90.0, "kind": "mark", "what": "start pause"}, {"t": 300.0, "kind": "mark", "what": "end pause",
                                                                   "phase": "Succeeded"}]
    path = tmp_path / "rec.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in marks + RECORDING))
    monkeypatch.setattr(sys, "argv", ["resume_latency.py", "--analyse", str(path)])
    resume_latency.main()
    out = capsys.readouterr().out
    assert "== pause: promoteInPlace false, experiment Succeeded ==" in out
    assert "resumes (new pod, checkpoint loaded): 2" in out and "bare pods (same image, no operator): 1" in out


def test_the_sdk_marks_restore_and_report_of_a_resumed_run(tmp_path, monkeypatch, capsys):
    import torch  # a dependency: without it this fails, never skips
    import hpo_trainer
    from hpo_trainer import TrialContext, run_by_hand, torch_state

    model = torch.nn.Linear(2, 1)

    def train():
        ctx = TrialContext.from_env()
        start = torch_state.restore(ctx, model=model)
        for epoch in ctx.epochs(start):
            torch_state.save(ctx, epoch, model=model)
            hpo_trainer.report(epoch, val_error=0.5)

    run_by_hand(train, TrialContext.for_local(tmp_path, until_epoch=1))
    monkeypatch.setenv("HPO_TRACE", "1")
    capsys.readouterr()
    run_by_hand(train, TrialContext.for_local(tmp_path, until_epoch=3))  # resumes after epoch 1
    marks = [rt.parse_trace_line(line) for line in capsys.readouterr().err.splitlines()]
    assert [(m["mark"], m["epoch"]) for m in marks] == [("restored", 1), ("reported", 2), ("reported", 3)]
    assert marks[0]["seconds"] >= 0 and marks[0]["time"] <= marks[1]["time"] <= marks[2]["time"]


def test_an_event_seen_twice_is_one_resume_and_one_promotion():
    # The watches re-list: an Event may arrive again, later, as ADDED; it must not count (nor time) twice.
    again = [event(400.0, "exp-0003", "Resumed", "epochs 2..2 in pod exp-0003-2"),
             event(400.1, "exp-0005", "PromotedInPlace", "continues to epoch 4 without a restart")]
    assert [t.pod for t in rt.resume_timelines(RECORDING + again)] == ["exp-0003-2", "exp-0004-3"]
    assert rt.resume_timelines(RECORDING + again)[0].decision == 100.50
    assert len(rt.in_place_timelines(RECORDING + again)) == 1


def test_each_experiment_is_figured_from_its_own_trials_only(tmp_path, capsys, monkeypatch):
    marks = [{"t": 90.0, "kind": "mark", "what": "start pause", "experiment": "exp"},
             {"t": 300.0, "kind": "mark", "what": "end pause", "phase": "Succeeded"}]
    # Another experiment's resume, re-listed while this one ran.
    other = [event(120.0, "other-0001", "Resumed", "epochs 2..2 in pod other-0001-2"),
             pod(120.1, "other-0001-2", scheduled=True)]
    path = tmp_path / "rec.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in marks + RECORDING + other))
    monkeypatch.setattr(sys, "argv", ["resume_latency.py", "--analyse", str(path)])
    resume_latency.main()
    assert "resumes (new pod, checkpoint loaded): 2" in capsys.readouterr().out


def test_a_bare_pod_is_the_trials_trainer_as_the_api_accepts_it():
    doc = resume_latency.experiment_manifest("resume-pause", "hpo-trainer:x", 4, 2, in_place=False)
    manifest = resume_latency.bare_pod("bare-0", doc)
    (trainer,) = manifest["spec"]["containers"]
    assert trainer["image"] == "hpo-trainer:x" and trainer["command"] == \
        doc["spec"]["trialTemplate"]["spec"]["containers"][0]["command"]
    assert all(isinstance(v, str) for part in trainer["resources"].values() for v in part.values())
    assert trainer["securityContext"]["runAsNonRoot"] and trainer["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert not trainer["securityContext"].get("readOnlyRootFilesystem")  # torch writes to /tmp, as in a trial pod
    assert {"name": "HPO_TRACE", "value": "1"} in trainer["env"]


def test_an_experiments_event_for_several_trials_names_every_resume():
    # The operator posts one Event on the experiment when several trials resume in one step.
    grouped = [
        trial(500.00, "exp-0007", "exp-0007-3", 4, 2, [[1, 1], [2, 2]]),
        trial(500.01, "exp-0008", "exp-0008-2", 2, 1, [[1, 1]]),
        event(500.05, "exp", "Resumed", "2 trials: exp-0007 (epochs 3..4 in pod exp-0007-3); "
                                        "exp-0008 (epochs 2..2 in pod exp-0008-2)"),
        pod(500.10, "exp-0007-3"), pod(500.12, "exp-0008-2"),
    ]
    timelines = rt.resume_timelines(grouped)
    assert [(t.pod, t.decision) for t in timelines] == [("exp-0007-3", 500.00), ("exp-0008-2", 500.01)]
    assert [t.stages for t in timelines] == [pytest.approx({"created": 0.10}), pytest.approx({"created": 0.11})]


def renamed(records, old, new):
    """The same records about trials, pods and Events named with another prefix."""
    out = []
    for r in records:
        r = dict(r)
        for key in ("name", "pod"):
            if isinstance(r.get(key), str) and r[key].startswith(old):
                r[key] = new + r[key][len(old):]
        if r["kind"] == "event":
            r["message"] = r["message"].replace(f"pod {old}", f"pod {new}")
        if r["kind"] == "trial" and r.get("pod"):
            r["pod"] = r["pod"].replace(old, new, 1)
        out.append(r)
    return out


def test_a_baseline_run_side_by_side_is_compared_stage_by_stage(tmp_path, capsys, monkeypatch):
    # The baseline experiment's resume takes twice as long at every stage; its bare pod too.
    ours = renamed(RECORDING, "exp-", "resume-pause-")
    slow = []
    for r in renamed(RECORDING, "exp-", "resume-base-"):
        r = dict(r, t=100.50 + 2 * (r["t"] - 100.50)) if 100 <= r["t"] < 150 else r
        if r["kind"] == "trace" and "time" in r and 100 <= r["time"] < 150:
            r["time"] = 100.50 + 2 * (r["time"] - 100.50)
            if "process_start" in r:
                r["process_start"] = 100.50 + 2 * (r["process_start"] - 100.50)
        slow.append(r)
    slow = renamed(slow, "bare-", "base-bare-")
    for r in slow:  # the baseline's bare pod is twice as slow too (created at 10.0)
        if (r.get("pod") or r.get("name")) == "base-bare-0":
            r["t"] = 10.0 + 2 * (r["t"] - 10.0)
            for key in ("time", "process_start"):
                if key in r:
                    r[key] = 10.0 + 2 * (r[key] - 10.0)
    marks = [{"t": 90.0, "kind": "mark", "what": "start pause", "experiment": "resume-pause"},
             {"t": 90.0, "kind": "mark", "what": "start base", "experiment": "resume-base"},
             {"t": 300.0, "kind": "mark", "what": "end pause", "phase": "Succeeded"},
             {"t": 300.0, "kind": "mark", "what": "end base", "phase": "Succeeded"}]
    path = tmp_path / "rec.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in marks + ours + slow))
    monkeypatch.setattr(sys, "argv", ["resume_latency.py", "--analyse", str(path)])
    resume_latency.main()
    out = capsys.readouterr().out
    assert "== base: promoteInPlace false, baseline image, experiment Succeeded ==" in out
    base_section = out.split("== base:")[1].split("== pause against")[0]
    base_bare = base_section.split("bare pods (same image, no operator)")[1]
    assert next(line for line in base_bare.splitlines()
                if line.strip().startswith("trainer's first line")).split()[-3] == "4.00"  # its own bare pod
    comparison = out.split("== pause against the baseline image, same run ==")[1]
    reported = next(line for line in comparison.splitlines() if line.strip().startswith("first epoch reported"))
    assert reported.split()[-3:] == ["3.00", "6.00", "0.50x"]
    bare = comparison.split("bare pods, from creation to")[1]
    first_line = next(line for line in bare.splitlines() if line.strip().startswith("trainer's first line"))
    assert first_line.split()[-3:] == ["2.00", "4.00", "0.50x"]  # each image's bare pod, by its own prefix
