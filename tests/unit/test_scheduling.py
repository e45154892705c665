"""Scheduler decisions: the ASHA promotion and stopping rules, Hyperband, SHA, median, restore."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpo_operator.scheduling import (
    ASHA, FIFO, AsynchronousHyperband, Decision, Job, MedianStopping, SynchronousSuccessiveHalving, TrialRecord,
    TrustedRungs, rung_levels,
)

C, P, S = Decision.CONTINUE, Decision.PAUSE, Decision.STOP


def test_rung_levels():
    assert rung_levels(1, 81, 3) == [1, 3, 9, 27]
    assert rung_levels(1, 27, 3) == [1, 3, 9]
    assert rung_levels(2, 20, 2) == [2, 4, 8, 16]
    assert rung_levels(9, 81, 3) == [9, 27]
    assert rung_levels(5, 5, 3) == []


def start(s, n):
    jobs = [s.next_job() for _ in range(n)]
    assert all(j.kind == "new" for j in jobs)
    return jobs


def test_asha_promotes_the_top_third_highest_rung_first():
    s = ASHA("min", 1, 9, 3, promote_in_place=False)
    start(s, 3)
    assert [s.on_result(i, 1, v) for i, v in enumerate([0.5, 0.3, 0.9])] == [P, P, P]
    # three records at rung 1: the top 1/3 (those at or below the 1/3 quantile) is 1 record, trial 1
    assert s.next_job() == Job.resume(1, 3)
    assert s.next_job() == Job.new(3, 1)  # trial 0 ranks 2nd of 3: not in the top third
    assert s.on_result(1, 2, 0.25) == C
    assert s.on_result(1, 3, 0.2) == P
    for tid, v in zip(range(4, 7), [0.1, 0.8, 0.7]):
        assert s.next_job() == Job.new(tid, 1)
    for tid, v in zip([3, 4, 5, 6], [0.6, 0.1, 0.8, 0.7]):
        assert s.on_result(tid, 1, v) == P
    # rung 1 now holds 7 records, its top third 3 of them: trials 4 (0.1), 1 (promoted) and 0 (0.5)
    # rung 3 holds 1 record: nothing promotable there
    assert s.next_job() == Job.resume(4, 3)
    assert s.next_job() == Job.resume(0, 3)
    assert s.next_job() == Job.new(7, 1)


def test_a_rung_of_two_records_promotes_its_better_one_and_a_rung_of_one_nothing():
    """The 1/eta quantile of two values lies between them: the better one is inside. (ASHA's paper,
    counting floor(n / eta), would hold it back until a third record arrived.)"""
    s = ASHA("min", 1, 9, 3, promote_in_place=False)
    start(s, 2)
    assert s.on_result(0, 1, 0.5) == P
    assert s.next_job() == Job.new(2, 1)  # one record ranks nothing
    assert s.on_result(1, 1, 0.4) == P
    assert s.next_job() == Job.resume(1, 3)
    assert s.next_job() == Job.new(3, 1)  # trial 0 is the worse of two


def test_promote_in_place_continues_without_a_pause():
    s = ASHA("min", 1, 9, 3, promote_in_place=True)
    start(s, 3)
    assert s.on_result(0, 1, 0.5) == P
    assert s.on_result(1, 1, 0.9) == P
    # the third arrival is the best of three: it would be promoted at once, so it continues
    assert s.on_result(2, 1, 0.1) == C
    assert s.until_of(2) == 3
    assert s.next_job() == Job.new(3, 1)


def test_ties_go_to_the_earlier_trial_and_nan_ranks_worst():
    s = ASHA("max", 1, 9, 3, promote_in_place=False)
    start(s, 6)
    for tid, v in enumerate([float("nan"), 0.7, 0.7, float("inf"), 0.2, -math.inf]):
        s.on_result(tid, 1, v)
    # max mode; the two 0.7 tie: trial 1 arrived first; inf is not a better score, it ranks worst
    assert s.next_job() == Job.resume(1, 3)
    assert s.next_job() == Job.resume(2, 3)
    assert s.next_job().kind == "new"


def test_stopping_type_keeps_the_top_third_and_stops_the_rest():
    s = ASHA("min", 1, 9, 3, type="stopping")
    jobs = start(s, 4)
    assert all(j.until == 9 for j in jobs)
    assert s.on_result(0, 1, 0.5) == C  # one record: best so far
    assert s.on_result(1, 1, 0.6) == S  # two records, cutoff index 0: only the best continues
    assert s.on_result(2, 1, 0.4) == C
    assert s.on_result(3, 1, 0.45) == S  # four records: floor(4/3) = 1: only 0.4 continues
    assert s.on_result(0, 2, 0.1) == C  # between rungs
    assert s.on_result(0, 3, float("nan")) == S  # diverged


def test_end_game_trains_the_leaders_to_full_resource_when_no_new_trial_may_start():
    s = ASHA("min", 1, 27, 3, promote_in_place=False, max_trials=3)
    start(s, 3)
    for tid, v in enumerate([0.4, 0.3, 0.1]):
        assert s.on_result(tid, 1, v) == P
    # 3 records at rung 1, top third 1: trial 2 goes to rung 3
    assert s.next_job() == Job.resume(2, 3)
    # no new trial allowed; rung 3 is empty, trial 2 is running past rung 1: wait for it
    assert s.next_job() is None
    s.on_result(2, 2, 0.1)
    assert s.on_result(2, 3, 0.05) == P
    # rung 3 holds 1 record (ranks nothing): without the end game nobody would ever reach 27
    assert s.next_job() == Job.resume(2, 9)
    assert s.next_job() is None  # trial 2 leads; the others are not trained further
    for e in range(4, 10):
        s.on_result(2, e, 0.04)
    assert s.next_job() == Job.resume(2, 27)
    for e in range(10, 28):
        s.on_result(2, e, 0.03)
    s.on_trial_end(2, "completed")
    assert s.trials[2].status == "completed"
    # the leader is done: the end game only uses the highest filled rung, whose trials all moved on
    assert s.next_job() is None


def test_fifo_runs_every_trial_to_the_end():
    s = FIFO("min", 5, max_trials=2)
    assert s.next_job() == Job.new(0, 5) and s.next_job() == Job.new(1, 5) and s.next_job() is None
    assert all(s.on_result(0, e, 1.0 / e) == C for e in range(1, 6))


def test_hyperband_spreads_trials_over_brackets_reproducibly():
    def brackets(seed):
        s = AsynchronousHyperband("min", 1, 81, 3, brackets=4, seed=seed, max_trials=600)
        return [s.next_job() for _ in range(400)]
    jobs = brackets(0)
    counts = np.bincount([j.bracket for j in jobs], minlength=4)
    assert counts[0] > counts[1] > counts[2] > counts[3] > 0  # most trials in the most aggressive bracket
    assert [j.until for j in jobs if j.bracket == 2][:1] == [9]  # bracket 2 starts at 1 * 3**2
    assert jobs == brackets(0) and jobs != brackets(1)


def test_hyperband_brackets_rank_separately():
    s = AsynchronousHyperband("min", 1, 27, 3, brackets=2, promote_in_place=False, seed=3)
    by_bracket = {}
    for _ in range(40):
        j = s.next_job()
        by_bracket.setdefault(j.bracket, []).append(j)
    b1 = by_bracket[1][:3]
    for j, v in zip(b1, [0.9, 0.8, 0.7]):
        s.on_result(j.trial_id, j.until, v)
    # bracket 1's rung at 3 epochs holds 3 records: its best is promotable even though
    # nothing in bracket 0 has reported
    assert s.next_job() == Job.resume(b1[2].trial_id, 9, 1)


def test_synchronous_sha_waits_for_the_whole_rung():
    s = SynchronousSuccessiveHalving("min", 1, 9, 3, bracket_size=3)
    assert [s.next_job().trial_id for _ in range(3)] == [0, 1, 2]
    assert s.next_job() is None  # bracket full, rung 1 still training
    assert s.on_result(0, 1, 0.3) == P and s.on_result(1, 1, 0.1) == P
    assert s.next_job() is None  # trial 2 has not reported: synchronous
    assert s.on_result(2, 1, 0.2) == P
    assert s.next_job() == Job.resume(1, 3)
    assert s.next_job() is None
    s.on_result(1, 2, 0.1)
    assert s.on_result(1, 3, 0.05) == P
    assert s.next_job() == Job.resume(1, 9)
    for e in range(4, 10):
        s.on_result(1, e, 0.01)
    s.on_trial_end(1, "completed")
    assert s.next_job() == Job.new(3, 1, 1)  # next bracket


def test_median_rule_stops_trials_worse_than_the_median_of_running_averages():
    s = MedianStopping("min", grace=2, max_resource=10, min_samples=3)
    for _ in range(5):
        s.next_job()
    curves = {0: [0.5, 0.4, 0.3], 1: [0.6, 0.5, 0.4], 2: [0.4, 0.3, 0.2]}
    for tid, curve in curves.items():
        for e, v in enumerate(curve, 1):
            assert s.on_result(tid, e, v) == C  # fewer than 3 others at each resource
    # trial 3 at epoch 2: best 0.7 vs median of running averages at 2 (0.45, 0.55, 0.35) = 0.45
    assert s.on_result(3, 1, 0.9) == C  # grace period
    assert s.on_result(3, 2, 0.7) == S
    assert s.on_result(4, 1, 0.3) == C
    assert s.on_result(4, 2, 0.2) == C


def _drive(s, running, rng, steps, quality):
    """Feed random results to the running trials for ``steps`` results; returns the decisions."""
    decisions = []
    for _ in range(steps):
        if not running:
            job = s.next_job()
            if job is None:
                break
            running.append(job.trial_id)
        tid = running[int(rng.integers(len(running)))]
        trial = s.trials[tid]
        epoch = (trial.observations[-1][0] if trial.observations else 0) + 1
        q = quality.setdefault(tid, rng.random())
        d = s.on_result(tid, epoch, q + 1.0 / epoch + 0.01 * rng.standard_normal())
        decisions.append((tid, epoch, d))
        if d is not C or epoch >= s.until_of(tid):
            running.remove(tid)
            if epoch >= s.max_resource:
                s.on_trial_end(tid, "completed")
            job = s.next_job()
            decisions.append(("job", job))
            if job:
                running.append(job.trial_id)
    return decisions


def _start_run(s, rng, steps):
    """Three workers from an empty scheduler, ``steps`` results in."""
    running = [j.trial_id for j in (s.next_job() for _ in range(3)) if j]
    return _drive(s, running, rng, steps, {})


def _snapshot(s):
    return [TrialRecord(t.trial_id, t.bracket, t.until, t.status, list(t.observations)) for t in s.trials.values()]


@pytest.mark.parametrize("make", [
    lambda: ASHA("min", 1, 27, 3, max_trials=60),
    lambda: ASHA("min", 1, 27, 3, type="stopping", max_trials=60),
    lambda: AsynchronousHyperband("max", 1, 27, 3, brackets=3, max_trials=60, seed=5),
    lambda: SynchronousSuccessiveHalving("min", 1, 27, 3, max_trials=60),
    lambda: MedianStopping("min", 2, 27, max_trials=60),
    lambda: TrustedRungs("min", 1, 27, 3, max_trials=60, seed=2, min_pairs=4, probe_fraction=0.2),
    lambda: TrustedRungs("min", 1, 27, 3, type="stopping", max_trials=60, seed=2, min_pairs=4, probe_fraction=0.2),
])
def test_restored_scheduler_makes_identical_decisions(make):
    """Rebuild a scheduler from its trials' records mid-run: the rest of the run is the same."""
    original = make()
    assert len(_start_run(original, np.random.default_rng(11), 100)) > 100
    snapshot = _snapshot(original)
    restored = make()
    restored.restore(snapshot)
    assert {t: (r.until, r.status, r.observations) for t, r in restored.trials.items()} == \
        {r.trial_id: (r.until, r.status, r.observations) for r in snapshot}
    # Continue the same stream of results on both: running trials keep running.
    running = [r.trial_id for r in snapshot if r.status == "running"]
    rest_original = _drive(original, list(running), np.random.default_rng(99), 250, {})
    rest_restored = _drive(restored, list(running), np.random.default_rng(99), 250, {})
    assert len(rest_original) > 50
    assert rest_original == rest_restored


def test_results_must_move_forward():
    s = ASHA("min", 1, 9, 3)
    s.next_job()
    s.on_result(0, 1, 0.5)
    with pytest.raises(ValueError, match="reported after"):
        s.on_result(0, 1, 0.4)


# ---- the adaptive scheduler: judges only at rungs whose ranks agree with later epochs ------------

def _adaptive(type="promotion", **kw):
    kw = {"probe_fraction": 0.0, "min_pairs": 6, "min_agreement": 0.5, "max_trials": 1000, **kw}
    return TrustedRungs("min", 1, 9, 3, type=type, **kw)


def _curve(first, final, epoch):
    """A learning curve: ``first`` at epoch 1, then a straight line down to ``final`` at epoch 9."""
    return first + (final - first) * (epoch - 1) / 8


def _report(s, trial_id, first, final):
    """Report epochs 1..9 of :func:`_curve` until the scheduler pauses or stops the trial (a trial
    that reaches epoch 9 completes); returns its last decision."""
    for epoch in range(1, 10):
        decision = s.on_result(trial_id, epoch, _curve(first, final, epoch))
        if decision != C:
            return decision
    s.on_trial_end(trial_id, "completed")
    return decision


def _probes(s, finals, first):
    """Start len(finals) trials (the first wave: probes while no rung is trusted) and report each in
    turn (:func:`_report`). Returns the jobs and each trial's last decision."""
    jobs = [s.next_job() for _ in finals]
    assert all(j.kind == "new" and j.until == 9 for j in jobs), jobs  # probes are granted the end
    assert all(s.trials[j.trial_id].bracket == s.first_wave_bracket for j in jobs)
    return jobs, [_report(s, job.trial_id, a, f) for job, f, a in zip(jobs, finals, first)]


def test_adaptive_measures_trust_on_the_newest_probes_only():
    """Old evidence fades: past MAX_EVIDENCE probes, agreement counts only the newest pairs, whatever
    order the results arrived in, skipping a probe without a value at the rung, and a restored
    scheduler counts the same ones."""
    from hpo_operator.rank_agreement import MAX_EVIDENCE

    s = _adaptive(min_agreement=1.1, max_trials=MAX_EVIDENCE + 200)  # never trusts: every trial a probe
    n_old = 100
    jobs = [s.next_job() for _ in range(n_old + MAX_EVIDENCE + 1)]
    order = np.random.default_rng(0).permutation(len(jobs))
    for i in order:
        tid, final = jobs[i].trial_id, 0.001 * i
        first = 1.0 - final if i < n_old else final  # the oldest probes rank backwards at epoch 1
        for epoch in (1, 3, 9):
            if i == len(jobs) - 1 and epoch == 1:
                continue  # the newest probe's epoch-1 line was lost: it pairs with nothing at rung 1
            s.on_result(tid, epoch, _curve(first, final, epoch))
    assert s.agreement(0) == (1.0, MAX_EVIDENCE, 9)  # the backwards ones are older than the newest 500
    assert s.agreement(1)[1:] == (MAX_EVIDENCE, 9)
    restored = _adaptive(min_agreement=1.1, max_trials=MAX_EVIDENCE + 200)
    restored.restore(TrialRecord(t.trial_id, t.bracket, t.until, t.status, list(t.observations))
                     for t in s.trials.values())
    assert [restored.agreement(k) for k in (0, 1)] == [s.agreement(k) for k in (0, 1)]


@pytest.mark.parametrize("type", ["promotion", "stopping"])
def test_adaptive_runs_everything_to_the_end_while_early_ranks_mislead(type):
    s = _adaptive(type)
    finals = [0.1 * i for i in range(1, 9)]
    _probes(s, finals, first=list(reversed(finals)))  # epoch 1 ranks them exactly backwards
    assert s.trusted() == [False, False]
    assert s.agreement(0)[:2] == (-1.0, 8)
    job = s.next_job()
    assert job.until == 9 and s.trials[job.trial_id].bracket == s.first_wave_bracket
    # No rung judges: a trial far worse than all others at epoch 1 continues.
    assert s.on_result(job.trial_id, 1, 5.0) == C


@pytest.mark.parametrize("type", ["promotion", "stopping"])
def test_adaptive_judges_from_the_first_rung_once_early_ranks_agree(type):
    s = _adaptive(type)
    finals = [0.1 * i for i in range(8, 0, -1)]  # each ranks best so far, so the first wave all runs on
    _, last = _probes(s, finals, first=[f + 0.5 for f in finals])  # same order at every epoch
    assert last == [C] * 8
    assert s.trusted() == [True, True]
    jobs = [s.next_job() for _ in range(3)]
    assert all(s.trials[j.trial_id].bracket == 0 for j in jobs)
    if type == "stopping":
        assert jobs[0].until == 9
        # Rung 1 holds the 8 probes (0.6..1.3): the top third is 0.6, 0.7; 5.0 is stopped.
        assert s.on_result(jobs[0].trial_id, 1, 5.0) == S
        assert s.on_result(jobs[1].trial_id, 1, 0.0) == C
    else:
        assert jobs[0].until == 1
        assert s.on_result(jobs[0].trial_id, 1, 5.0) == P
        # The best of ten at rung 1 is promoted at once (promote in place).
        assert s.on_result(jobs[1].trial_id, 1, 0.0) == C and s.until_of(jobs[1].trial_id) == 3


@pytest.mark.parametrize("type", ["promotion", "stopping"])
def test_adaptive_first_wave_runs_on_only_in_a_trusted_rungs_better_half(type):
    s = _adaptive(type)
    jobs, last = _probes(s, [0.1 * i for i in range(1, 9)], first=[0.1 * i + 0.5 for i in range(1, 9)])
    # Reported best first, each later trial ranks last. Trial 5's epoch 3 gives rung 1 its sixth pair
    # with epoch 3, so rung 1 is trusted; from then on a first-wave trial outside the better half of a
    # rung's records pauses there (promotion) or stops: trial 5 at rung 3, trials 6 and 7 at rung 1.
    out = P if type == "promotion" else S
    assert s.trusted()[0] and last == [C] * 5 + [out] * 3
    assert [s.trials[j.trial_id].observations[-1][0] for j in jobs[5:]] == [3, 1, 1]


@pytest.mark.parametrize("type", ["promotion", "stopping"])
def test_adaptive_first_wave_at_a_trusted_rung_needs_the_better_half(type):
    s = _adaptive(type)
    jobs = [s.next_job() for _ in range(8)]  # the first wave: started while no rung is trusted
    finals = [0.8 - 0.1 * i for i in range(6)]  # each ranks best so far: none falls behind
    assert [_report(s, job.trial_id, f + 0.5, f) for job, f in zip(jobs, finals)] == [C] * 6
    assert s.trusted() == [True, True]
    # Rung 1 holds 0.8 .. 1.3. Third of seven: inside the better half (four), runs on. Fifth of eight:
    # outside it (four), though ASHA's rules never judge a probe.
    assert s.on_result(jobs[6].trial_id, 1, 0.95) == C
    assert s.on_result(jobs[7].trial_id, 1, 1.05) == (P if type == "promotion" else S)
    if type == "stopping":
        return
    # Paused, it is a rung-1 candidate like any other, and a restarted scheduler holds it so too: once
    # enough worse trials fill rung 1 it ranks in the top third, and ASHA resumes it to the end.
    restored = _adaptive(type)
    restored.restore(TrialRecord(t.trial_id, t.bracket, t.until, t.status, list(t.observations))
                     for t in s.trials.values())
    for sched in (s, restored):
        new_trials = 0
        while (job := sched.next_job()).kind == "new":
            assert job.until == 1 and sched.on_result(job.trial_id, 1, 2.0) == P
            new_trials += 1
        assert job == Job.resume(jobs[7].trial_id, 9, s.first_wave_bracket)
        assert new_trials == 5  # top third of 13 records: 5 (floor(12 / 3) + 1); it ranks 5th


def test_adaptive_keeps_probing_a_share_of_trials():
    s = _adaptive(probe_fraction=0.25)
    finals = [0.1 * i for i in range(8, 0, -1)]
    _probes(s, finals, first=[f + 0.5 for f in finals])
    brackets = [s.trials[s.next_job().trial_id].bracket for _ in range(200)]
    share = brackets.count(s.probe_bracket) / len(brackets)
    assert 0.15 < share < 0.35 and brackets.count(0) == len(brackets) - brackets.count(s.probe_bracket)
