"""How a wave of pod deletions is split into deletecollection requests (``actions.chunks``)."""

from __future__ import annotations

from hpo_operator.controller.actions import DELETE_CHUNK, MIN_DELETE_CHUNK, chunks, deletion_batches


def test_a_large_wave_is_split_evenly_into_parallel_requests_and_a_small_one_is_one_request():
    trials = [f"exp-{i:04d}" for i in range(104)]
    split = chunks(reversed(trials + trials[:10]), parts=16)  # repeats and any order
    assert [len(c) for c in split] == [7] * 14 + [6]
    assert [t for c in split for t in c] == trials  # sorted, each once
    assert chunks(trials[:3], parts=16) == [trials[:3]]
    assert [len(c) for c in chunks(trials[:9], parts=16)] == [MIN_DELETE_CHUNK, MIN_DELETE_CHUNK, 1]


def test_no_request_names_more_than_delete_chunk_trials():
    trials = [f"exp-{i:04d}" for i in range(5 * DELETE_CHUNK + 1)]
    assert [len(c) for c in chunks(trials)] == [DELETE_CHUNK] * 5 + [1]
    assert max(len(c) for c in chunks(trials, parts=2)) == DELETE_CHUNK


def test_runs_are_deleted_per_attempt_number():
    runs = [("exp-0000", 1), ("exp-0001", 2), ("exp-0002", 1)]
    assert deletion_batches(runs, parts=16) == [(1, ["exp-0000", "exp-0002"]), (2, ["exp-0001"])]
