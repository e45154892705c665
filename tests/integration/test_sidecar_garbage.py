"""The REAL sidecar process, with its own ServiceAccount's token, on a garbage-laden metrics file.

Against the real API server: every valid line becomes one observation, each kind
of problem is recorded once in the trial's status (the only thing the sidecar may
write), the file rewritten under it loses nothing, and the process ends normally.
The scenario is support.bad_metrics's (the reliability report runs it too).
"""

from __future__ import annotations

import pytest

from support.bad_metrics import EXPECTED_REASONS, run_garbage

pytestmark = pytest.mark.timeout(180)


def test_real_sidecar_keeps_every_valid_line_and_records_each_problem_once(crds_installed, namespace, kube_api,
                                                                          tmp_path):
    outcome = run_garbage(crds_installed, kube_api, namespace, tmp_path)
    assert outcome.exit_code == 0, outcome.log
    assert outcome.recorded == [(1, 0.9), (2, 0.8), (3, None), (4, None), (5, None), (6, 0.4)]  # non-finite: null
    assert sorted(outcome.reasons) == sorted(EXPECTED_REASONS), outcome.problems  # each kind once, not per line
    assert all(p["attempt"] == 1 and p["message"].isprintable() for p in outcome.problems), outcome.problems
    assert "Traceback" not in outcome.log
    # The sidecar posted no Event itself (its Role does not allow it); the operator announces problems.
    assert outcome.events == 0
