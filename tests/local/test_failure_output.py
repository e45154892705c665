"""`hpo run` says why a trainer fails, in the terminal, on its first failure: the end of its output is quoted."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hpo_operator.local.processes import output_tail

from support.curve_manifests import curve_manifest

pytestmark = pytest.mark.timeout(120)

MISSING = "hpo_no_such_module_for_tests"


def test_a_trainer_that_fails_before_reporting_is_quoted_on_the_first_failure_and_in_the_outcome(
        tmp_path, write_manifest, python):
    # What a fresh machine without scikit-learn did to the demo: every run dies on an import.
    doc = curve_manifest(trials=4, parallelism=1, algorithm="fifo", retries=2, max_failed=0,
                         command=[python, "-c", f"import {MISSING}"])
    path = write_manifest(doc)
    proc = subprocess.run([sys.executable, "-m", "hpo_operator.cli.main", "run", str(path),
                           "--out", str(tmp_path / "runs")], capture_output=True, text=True, timeout=100)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    cause = f"ModuleNotFoundError: No module named '{MISSING}'"
    # The first failure already names the cause (the retry line), before any retry is spent.
    first = next(line for line in proc.stderr.splitlines() if "retry 1/2" in line)
    assert cause in first, proc.stderr
    # The summary's final message quotes it too, next to the reason.
    assert "Failed (MaxFailedTrialsReached)" in proc.stdout
    message = next(line for line in proc.stdout.splitlines() if line.startswith("message:"))
    assert cause in message and "run-3.log" in message, proc.stdout


def test_the_quoted_tail_is_the_last_lines_and_bounded(tmp_path):
    log = tmp_path / "run-1.log"
    log.write_text("\n".join(f"line {i}" for i in range(1000)) + "\n\nValueError: " + "x" * 1000 + "\n")
    tail = output_tail(log)
    assert tail.startswith("...") and tail.endswith("x" * 50) and len(tail) <= 400
    log.write_text("epoch 1\nTraceback (most recent call last):\n  File \"t.py\", line 1\nKeyError: 'lr'\n")
    assert output_tail(log) == "Traceback (most recent call last): | File \"t.py\", line 1 | KeyError: 'lr'"
    assert output_tail(tmp_path / "missing.log") == ""
