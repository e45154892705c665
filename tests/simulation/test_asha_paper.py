"""The promotion type of ASHA against the paper's Algorithm 2 (tests/simulation/asha_paper.py).

Both schedulers get the same asynchronous stream of finished jobs, replayed
from real learning curves, and must hand out the same jobs in the same order:
which trial is promoted, to which resource, and when a new trial starts
instead. The reference is checked first on a stream worked out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from hpo_operator.scheduling import ASHA, Decision
from hpo_operator.sim import LearningCurveTable

from asha_paper import PaperASHA
from support.paths import TABLES


def drive(values, scheduler, paper, *, workers, jobs: int, rng) -> list[tuple[str, int, int]]:
    """Hand out ``jobs`` jobs to ``workers`` workers; a random running job finishes next.

    ``values(trial, epoch)``: the metric the trainer reports. ``workers``: a
    number, or a function of the jobs handed out so far (parallelism edited
    while the experiment runs: fewer workers let promotable trials pile up,
    more then ask for several jobs in a row). Returns the job stream, after
    asserting at each hand-out that both schedulers chose the same.
    """
    capacity = workers if callable(workers) else (lambda handed_out: workers)
    stream: list[tuple[str, int, int]] = []
    running: dict[int, int] = {}  # trial -> resource granted to its job
    trained: dict[int, int] = {}  # trial -> epochs trained so far (a paused trial resumes after them)

    def hand_out(ours: tuple[str, int, int]) -> None:
        theirs = paper.get_job()
        assert ours == theirs, f"job {len(stream)}: ours {ours}, the paper's {theirs}; stream so far {stream[-8:]}"
        stream.append(ours)
        running[ours[1]] = ours[2]

    def fill() -> None:
        while len(running) < capacity(len(stream)) and len(stream) < jobs:
            job = scheduler.next_job()
            hand_out((job.kind, job.trial_id, job.until))

    fill()
    while len(stream) < jobs:
        trial = sorted(running)[int(rng.integers(len(running)))]
        until = running.pop(trial)
        for epoch in range(trained.get(trial, 0) + 1, until + 1):
            decision = scheduler.on_result(trial, epoch, values(trial, epoch))
            assert decision is not Decision.STOP
            if epoch < until:
                assert decision is Decision.CONTINUE, (trial, epoch, until, decision)
        trained[trial] = until
        paper.job_done(trial, until, values(trial, until))
        if until == paper.max_resource:
            scheduler.on_trial_end(trial, "completed")
            fill()
        elif decision is Decision.CONTINUE:  # promoted in place: the job the paper's get_job hands out now
            hand_out(("resume", trial, scheduler.until_of(trial)))
        else:
            assert decision is Decision.PAUSE
            fill()
    return stream


HAND_CURVES = {  # trial -> its value at epochs 1, 2, 3, ... (epochs between rungs are never compared)
    0: [.5] * 9, 1: [.4, .4, .35] + [.35] * 6, 2: [.6] * 9, 3: [.3, .3, .2] + [.2] * 6,
    4: [.7] * 9, 5: [.45] * 9, 6: [.1, .1, .15] + [.12] * 6, 7: [.9] * 9,
}
# eta 3, rungs at epochs 1 and 3, max 9; one worker. Worked out from Algorithm 2 by hand, top_k as the
# records at or below the 1/eta quantile: none of 1 record, 1 of 2 or 3, 2 of 4 to 6, 3 of 7.
HAND_STREAM = [
    ("new", 0, 1),  # the epoch-1 rung holds .5: one record ranks nothing
    ("new", 1, 1),
    ("resume", 1, 3),  # epoch-1 rung: .5 .4, top 1: trial 1
    ("new", 2, 1),  # epoch-3 rung: one record; epoch-1 rung: .5 .4 .6, top 1 is trial 1, promoted
    ("new", 3, 1),
    ("resume", 3, 3),  # epoch-1 rung: four records, top 2: trials 3 (.3) and 1, and 3 was not promoted
    ("resume", 3, 9),  # epoch-3 rung: .35 .2, top 1: trial 3; the highest rung goes first
    ("new", 4, 1),  # trial 3 is complete; every top trial of both rungs was promoted
    ("new", 5, 1),  # epoch-1 rung: five records, top 2: trials 3 and 1
    ("new", 6, 1),  # six records, top 2: the same
    ("resume", 6, 3),  # seven records, top 3: trials 6 (.1), 3 and 1, and 6 was not promoted
    ("resume", 6, 9),  # epoch-3 rung: .35 .2 .15, top 1: trial 6
    ("new", 7, 1),  # trial 6 is complete; every top trial of both rungs was promoted
]


@pytest.mark.parametrize("in_place", [False, True], ids=["pause-and-resume", "promote-in-place"])
def test_a_stream_worked_out_by_hand(in_place):
    paper = PaperASHA(1, 9, 3)
    ours = ASHA("min", 1, 9, 3, type="promotion", promote_in_place=in_place)
    values = lambda trial, epoch: HAND_CURVES[trial][epoch - 1]  # noqa: E731
    stream = drive(values, ours, paper, workers=1, jobs=len(HAND_STREAM), rng=np.random.default_rng(0))
    assert stream == HAND_STREAM


@pytest.mark.parametrize("table", ["digits_s44", "wine_s22"])
@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("eta, min_resource, workers, in_place", [
    (3, 1, 1, False), (3, 1, 8, False), (3, 1, 8, True), (2, 1, 4, False), (2, 2, 16, True), (4, 1, 6, False),
    (3, 1, "8, 2, 16", False), (2, 1, "8, 2, 16", True),
])
def test_promotions_equal_the_papers_on_learning_curves(table, mode, eta, min_resource, workers, in_place):
    curves = LearningCurveTable.load(TABLES / f"{table}.json")
    max_resource = min(27 if eta == 3 else 32, curves.max_resource)
    rng = np.random.default_rng([eta, min_resource, len(str(workers)), int(in_place), len(mode)])
    if isinstance(workers, str):  # 8 workers, 2 from the 150th job on, 16 from the 300th
        workers = lambda handed_out: 8 if handed_out < 150 else 2 if handed_out < 300 else 16  # noqa: E731
    jobs = 600
    rows = rng.integers(curves.n_rows, size=jobs)  # a trial's curve: one row of the table
    diverged = rng.random(jobs) < 0.03  # a few trials go NaN after their first epoch
    sign = 1.0 if mode == "min" else -1.0  # "max" sees the same ranking through negated values

    def values(trial: int, epoch: int) -> float:
        if diverged[trial] and epoch > 1:
            return float("nan")
        return sign * float(curves.curves[rows[trial], epoch - 1])

    paper = PaperASHA(min_resource, max_resource, eta, mode)
    ours = ASHA(mode, min_resource, max_resource, eta, type="promotion", promote_in_place=in_place)
    stream = drive(values, ours, paper, workers=workers, jobs=jobs, rng=rng)
    # The stream really exercises promotion at every rung, up to complete trials.
    targets = {until for kind, _, until in stream if kind == "resume"}
    assert targets == set(paper.levels[1:]) | {max_resource}, targets
