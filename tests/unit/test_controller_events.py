"""Which Events a step posts: per trial while they are few, one per reason on the experiment when many
trials share it, and warnings always on their trial."""

from __future__ import annotations

from hpo_operator.controller.events import EVENT_MESSAGE_CHARS, Event, coalesce_events


def test_a_reason_only_one_trial_had_stays_on_that_trial():
    events = [Event("t-1", "Normal", "Started", "epochs 1..1 in pod t-1-1"),
              Event("t-2", "Normal", "Paused", "paused at rung epoch 1")]
    assert coalesce_events(events) == events


def test_several_trials_with_one_reason_become_one_experiment_event_naming_each():
    events = [Event(f"t-{i}", "Normal", "Paused", "paused at rung epoch 1") for i in range(3)]
    [ev] = coalesce_events(events)
    assert ev.trial is None and ev.type == "Normal" and ev.reason == "Paused"
    assert ev.message == ("3 trials: t-0 (paused at rung epoch 1); t-1 (paused at rung epoch 1); "
                          "t-2 (paused at rung epoch 1)")


def test_warnings_are_never_merged_and_order_is_kept():
    events = [Event("t-1", "Warning", "Retrying", "trainer exited 1"),
              Event("t-2", "Warning", "Retrying", "trainer exited 1"),
              Event("t-3", "Normal", "Started", "a"), Event("t-4", "Normal", "Started", "b"),
              Event(None, "Normal", "Started", "on the experiment itself")]
    out = coalesce_events(events)
    assert [(e.trial, e.reason) for e in out] == [("t-1", "Retrying"), ("t-2", "Retrying"), (None, "Started"),
                                                  (None, "Started")]
    assert out[2].message == "2 trials: t-3 (a); t-4 (b)"
    assert out[3].message == "on the experiment itself"


def test_a_long_list_is_cut_with_how_many_were_left_out():
    events = [Event(f"experiment-with-a-long-name-{i}", "Normal", "Started", f"epochs 1..1 in pod p-{i}")
              for i in range(200)]
    [ev] = coalesce_events(events)
    assert len(ev.message) <= EVENT_MESSAGE_CHARS
    named = ev.message.count("experiment-with-a-long-name-")
    assert 10 < named < 200 and ev.message.endswith(f"and {200 - named} more")
