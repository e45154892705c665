"""`hpo run`: real trainer processes, real pause/resume through checkpoints, crashes, Ctrl-C and --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpo_operator.local import LocalRunner
from hpo_operator.spec import experiment_from_dict

from support.paths import REPO
from support.curve_manifests import curve_manifest

pytestmark = pytest.mark.timeout(180)


def run_local(doc, path, out, **kw):
    runner = LocalRunner(experiment_from_dict(doc), path, out, poll_seconds=0.01, **kw)
    return runner, runner.run()


def metric_epochs(run_dir: Path, trial: str) -> list[int]:
    lines = (run_dir / trial / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["epoch"] for line in lines if line.strip()]


def assert_contiguous(doc):
    for t in doc["trials"]:
        epochs = [e for e, _ in t["observations"]]
        assert epochs == list(range(1, len(epochs) + 1)), (t["name"], epochs)


def test_paused_trials_resume_from_their_checkpoint(tmp_path, write_manifest):
    doc = curve_manifest(trials=9, parallelism=2)
    runner, result = run_local(doc, write_manifest(doc), tmp_path / "runs")
    assert result["phase"] == "Succeeded"
    resumed = [t for t in result["trials"] if t["attempts"] > 1]
    assert resumed, "ASHA promotion must have paused and resumed at least one trial"
    for t in resumed:
        # the resumed run continued after the checkpointed epoch: no epoch was trained or reported twice
        epochs = metric_epochs(runner.run_dir, t["name"])
        assert epochs == list(range(1, t["last_epoch"] + 1))
    assert_contiguous(result)
    assert result["best"]["complete"] and result["best"]["epoch"] == 9
    assert Path(result["best"]["checkpoint_dir"]).is_dir()
    # stopped trials' checkpoints are deleted, the best one's kept
    stopped = [t for t in result["trials"] if t["phase"] == "Stopped" and t["name"] != result["best"]["trial"]]
    assert stopped and not any((runner.run_dir / t["name"] / "checkpoints").exists() for t in stopped)


def test_promote_in_place_keeps_the_process_running(tmp_path, write_manifest):
    doc = curve_manifest(trials=9, parallelism=1, promote_in_place=True)
    events = []
    runner = LocalRunner(experiment_from_dict(doc), write_manifest(doc), tmp_path / "runs", poll_seconds=0.01,
                         progress=events.append)
    result = runner.run()
    assert result["phase"] == "Succeeded"
    promoted = {e.split()[1] for e in events if e.startswith("promoted") and "in place" in e}
    assert promoted, events
    for t in result["trials"]:
        if t["name"] in promoted:
            # rungs at 1 and 3: a trial that crossed them with pauses needs a run per rung;
            # each promotion in place saves one run (and its pod start, on a cluster)
            crossed = sum(1 for r in (1, 3) if t["last_epoch"] > r)
            assert t["attempts"] <= crossed
            assert "resumed" not in " ".join(e for e in events if t["name"] in e and "epochs 2..3" in e)


def test_a_crashing_trainer_is_retried_from_its_last_checkpoint(tmp_path, write_manifest):
    doc = curve_manifest(trials=3, parallelism=1, algorithm="fifo", max_resource=5, crash_at_epoch=3)
    events = []
    runner = LocalRunner(experiment_from_dict(doc), write_manifest(doc), tmp_path / "runs", poll_seconds=0.01,
                         progress=events.append)
    result = runner.run()
    assert result["phase"] == "Succeeded"
    for t in result["trials"]:
        assert (t["phase"], t["failures"], t["attempts"], t["last_epoch"]) == ("Completed", 1, 2, 5)
        assert metric_epochs(runner.run_dir, t["name"]) == [1, 2, 3, 4, 5]
        # the crash is announced with its exit code and the first run's log, then retried
        log = runner.run_dir / t["name"] / "run-1.log"
        retry = [e for e in events if e.startswith(f"{t['name']}: retry 1/2 from epoch 2: trainer exited with code 3;")]
        assert len(retry) == 1 and retry[0].endswith(f"log: {log}"), events
        assert (runner.run_dir / t["name"] / "run-2.log").exists()
    assert_contiguous(result)


def test_a_failed_experiment_stops_its_other_running_trainers(tmp_path, write_manifest, python):
    """maxFailedTrials: 0 and three trials at once: the first failure ends the experiment and kills the others."""
    trainer = tmp_path / "fail_or_train.py"
    trainer.write_text(
        "import os, sys, time\n"
        "import hpo_trainer\n"
        "ctx = hpo_trainer.TrialContext.from_env()\n"
        "open(os.environ['HPO_CHECKPOINT_DIR'] + '/../pid', 'w').write(str(os.getpid()))\n"
        "for epoch in ctx.epochs():\n"
        "    if ctx.config['kind'] == 'fails' and epoch == 2:\n"
        "        sys.exit(7)\n"
        "    time.sleep(0.2)\n"
        "    hpo_trainer.report(epoch, val_error=1.0 / epoch)\n"
    )
    doc = curve_manifest(trials=3, parallelism=3, algorithm="fifo", max_resource=300, retries=0, max_failed=0,
                         command=[python, str(trainer)])
    doc["spec"]["searchSpace"] = {"kind": {"type": "choice", "values": ["trains", "fails", "trains too"]}}
    doc["spec"]["searcher"] = {"algorithm": "grid"}
    runner, result = run_local(doc, write_manifest(doc), tmp_path / "runs")
    assert (result["phase"], result["reason"]) == ("Failed", "MaxFailedTrialsReached")
    by_kind = {t["config"]["kind"]: t for t in result["trials"]}
    assert by_kind["fails"]["phase"] == "Failed"
    for kind in ("trains", "trains too"):
        t = by_kind[kind]
        assert t["phase"] == "Stopped" and t["last_epoch"] < 300, t
        assert "MaxFailedTrialsReached" in t["message"]
        pid = int((runner.run_dir / t["name"] / "pid").read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # its trainer is gone, not left training


def test_failed_trials_are_counted_exactly_and_end_the_experiment(tmp_path, write_manifest, python):
    doc = curve_manifest(trials=5, parallelism=1, algorithm="fifo", retries=1, max_failed=1,
                         command=[python, "-c", "import sys; sys.exit(7)"])
    _, result = run_local(doc, write_manifest(doc), tmp_path / "runs")
    assert result["phase"] == "Failed" and result["reason"] == "MaxFailedTrialsReached"
    failed = [t for t in result["trials"] if t["phase"] == "Failed"]
    assert len(failed) == 2 and all(t["attempts"] == 2 and t["failures"] == 2 for t in failed)
    assert "exited with code 7" in failed[0]["message"]


def test_bad_metric_lines_are_skipped_and_nan_ranks_worst(tmp_path, write_manifest, python):
    trainer = tmp_path / "noisy.py"
    trainer.write_text(
        "import json, os\n"
        "import hpo_trainer\n"
        "ctx = hpo_trainer.TrialContext.from_env()\n"
        "path = os.environ['HPO_METRICS_FILE']\n"
        "for epoch in ctx.epochs():\n"
        "    with open(path, 'ab') as f:\n"
        "        f.write(b'not json\\n' + bytes([0xff, 0xfe]) + b'\\n' + b'{\"epoch\": 0}\\n')\n"
        "    value = float('nan') if ctx.config['bad'] else 1.0 / epoch\n"
        "    hpo_trainer.report(epoch, val_error=value)\n"
    )
    doc = curve_manifest(trials=2, parallelism=1, algorithm="fifo", max_resource=3, command=[python, str(trainer)])
    doc["spec"]["searchSpace"] = {"bad": {"type": "choice", "values": [True, False]}}
    doc["spec"]["searcher"] = {"algorithm": "grid"}
    events = []
    runner = LocalRunner(experiment_from_dict(doc), write_manifest(doc), tmp_path / "runs", poll_seconds=0.01,
                         progress=events.append)
    result = runner.run()
    assert result["phase"] == "Succeeded"
    by_bad = {t["config"]["bad"]: t for t in result["trials"]}
    assert [v for _, v in by_bad[True]["observations"]] == [None, None, None]  # NaN kept as null
    assert result["best"]["trial"] == by_bad[False]["name"]
    # every kind of bad line reported once per run, not once per line
    noise = [e for e in events if "ignored a metrics line" in e]
    assert len(noise) == 2 * 3 and len(set(noise)) == 6


def test_an_existing_run_is_not_overwritten(tmp_path, write_manifest):
    doc = curve_manifest(trials=1, parallelism=1, algorithm="fifo", max_resource=2)
    path = write_manifest(doc)
    run_local(doc, path, tmp_path / "runs")
    with pytest.raises(ValueError, match="--resume"):
        LocalRunner(experiment_from_dict(doc), path, tmp_path / "runs")


def hpo(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "hpo_operator.cli.main", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def observed(results: Path) -> int:
    """Epochs on record in a run's results.json (0 before it exists; a torn read counts as none yet)."""
    try:
        return sum(len(t["observations"]) for t in json.loads(results.read_text())["trials"])
    except (OSError, ValueError):
        return 0


def ctrl_c_delivered() -> None:
    """In the child: SIGINT raises KeyboardInterrupt, as in a terminal. A suite started in the background of
    a non-interactive shell inherits SIGINT ignored, Python then installs no handler, and the run would finish
    as if no Ctrl-C came."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_then_resume_loses_and_repeats_no_epoch(tmp_path, write_manifest):
    # 0.3 s epochs: the ~17 epochs left after the 8th outlast a loaded machine's delay in seeing it (at 0.05 s
    # the run once ended before the Ctrl-C came, and exited 0)
    doc = curve_manifest(name="interrupted", trials=8, parallelism=1, seconds=0.3, max_resource=9)
    path = write_manifest(doc)
    out = tmp_path / "runs"
    proc = hpo("run", str(path), "--out", str(out), preexec_fn=ctrl_c_delivered)
    results = out / "interrupted" / "results.json"
    try:  # real progress before interrupting, or the test fails: an early SIGINT would check nothing
        wait_for(lambda: observed(results) >= 8, 60, "8 epochs on record before Ctrl-C")
    except AssertionError:
        proc.kill()
        raise
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    interrupted = json.loads(results.read_text())
    assert interrupted["phase"] == "Interrupted"
    done_before = {t["name"]: len(t["observations"]) for t in interrupted["trials"]}
    assert sum(done_before.values()) >= 8  # the interrupt came after real progress, and kept it

    resumed = hpo("run", str(path), "--out", str(out), "--resume")
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    final = json.loads(results.read_text())
    assert final["phase"] == "Succeeded"
    assert_contiguous(final)
    for t in final["trials"]:
        assert len(t["observations"]) >= done_before.get(t["name"], 0)
        epochs = metric_epochs(out / "interrupted", t["name"])
        assert epochs == sorted(set(epochs)), f"{t['name']} reported an epoch twice: {epochs}"

    # With one worker the decisions do not depend on timing: the interrupted-and-resumed
    # experiment ends exactly as an undisturbed one.
    clean = curve_manifest(name="undisturbed", trials=8, parallelism=1, seconds=0.0, max_resource=9)
    _, reference = run_local(clean, write_manifest(clean), tmp_path / "runs")
    strip = lambda d: [(t["config"]["row"], t["phase"], [e for e, _ in t["observations"]]) for t in d["trials"]]  # noqa: E731
    assert strip(final) == strip(reference)
    assert final["best"]["config"]["row"] == reference["best"]["config"]["row"]


def test_local_command_paths_resolve_against_the_manifest(tmp_path):
    from hpo_operator.local.processes import trainer_command

    (tmp_path / "train.py").write_text("")
    doc = curve_manifest(command=["python3", "train.py", "--flag"])
    cmd = trainer_command(experiment_from_dict(doc).spec, tmp_path)
    assert cmd == [sys.executable, str((tmp_path / "train.py").resolve()), "--flag"]
    assert os.path.isabs(cmd[0])
