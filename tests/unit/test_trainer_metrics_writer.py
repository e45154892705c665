"""report() / MetricsWriter: one durable JSON line per epoch, readable by another process at once."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

import hpo_trainer
from hpo_trainer import MetricsWriter, TrialContext, contract, parse_metric_line, run_by_hand


def lines(path):
    return path.read_bytes().decode().splitlines()


def test_writes_one_line_per_call_with_epoch_metrics_and_time(tmp_path):
    path = tmp_path / "sub" / "metrics.jsonl"  # missing folders are created
    writer = MetricsWriter(path)
    writer.write(1, val_error=0.5, val_loss=1.25)
    writer.write(2, val_error=np.float32(0.25), steps=np.int64(40))
    first, second = (json.loads(line) for line in lines(path))
    assert list(first) == ["epoch", "val_error", "val_loss", "time"]
    assert first["epoch"] == 1 and first["val_error"] == 0.5
    assert isinstance(first["time"], float) and first["time"] > 1.6e9
    assert second["val_error"] == 0.25 and second["steps"] == 40
    assert path.read_bytes().endswith(b"\n")


def test_nonfinite_values_round_trip_as_strings(tmp_path):
    path = tmp_path / "m.jsonl"
    MetricsWriter(path).write(1, val_error=math.nan, val_loss=math.inf, grad=-math.inf)
    raw = path.read_bytes()
    assert b'"val_error": "nan"' in raw and b'"val_loss": "inf"' in raw and b'"grad": "-inf"' in raw
    json.loads(raw, parse_constant=lambda c: pytest.fail(f"bare {c} is not JSON"))
    record = parse_metric_line(raw, "val_error", None)
    assert math.isnan(record.value)
    assert record.metrics["val_loss"] == math.inf and record.metrics["grad"] == -math.inf


@pytest.mark.parametrize(
    ("epoch", "metrics", "error", "words"),
    [
        (0, {"val_error": 1.0}, ValueError, "positive int"),
        (True, {"val_error": 1.0}, ValueError, "positive int"),
        (1.0, {"val_error": 1.0}, ValueError, "positive int"),
        (1, {}, ValueError, "at least one metric"),
        (1, {"time": 3.0}, ValueError, "'time' is reserved"),
        (1, {"val_error": "low"}, TypeError, "'val_error' must be a number"),
        (1, {"val_error": None}, TypeError, "'val_error' must be a number"),
    ],
)
def test_rejects_bad_input_and_writes_nothing(tmp_path, epoch, metrics, error, words):
    path = tmp_path / "m.jsonl"
    with pytest.raises(error, match=words):
        MetricsWriter(path).write(epoch, **metrics)
    assert not path.exists()


def test_terminates_a_torn_line_left_by_a_dead_writer(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"epoch": 1, "val_err')  # previous run killed mid-write
    MetricsWriter(path).write(2, val_error=0.5)
    torn, good = path.read_bytes().split(b"\n")[:2]
    assert torn == b'{"epoch": 1, "val_err'
    assert parse_metric_line(good, "val_error", None).epoch == 2


def test_report_uses_the_env_context_and_another_process_sees_the_line_at_once(tmp_path):
    ctx = TrialContext.for_local(tmp_path, until_epoch=3)
    reader = (
        "import sys, pathlib; "
        "print(pathlib.Path(sys.argv[1]).read_bytes().decode().splitlines()[-1])"
    )

    def trainer():
        seen = []
        for epoch in TrialContext.from_env().epochs():
            hpo_trainer.report(epoch, val_error=1.0 / epoch)
            # No close or flush by the trainer: the line must already be in the file.
            out = subprocess.run([sys.executable, "-c", reader, str(ctx.metrics_file)],
                                 capture_output=True, text=True, check=True)
            seen.append(json.loads(out.stdout)["epoch"])
        return seen

    assert run_by_hand(trainer, ctx) == [1, 2, 3]
    assert len(lines(ctx.metrics_file)) == 3


def test_report_skips_epochs_reported_before_the_resume(tmp_path, capsys):
    ctx = TrialContext.for_local(tmp_path, until_epoch=9, start_epoch=4)
    written = run_by_hand(lambda: [hpo_trainer.report(e, val_error=0.1) for e in (4, 5)], ctx)
    assert written[0] is None and written[1]["epoch"] == 5
    assert [json.loads(line)["epoch"] for line in lines(ctx.metrics_file)] == [5]
    assert "already reported" in capsys.readouterr().err


def test_report_without_environment_names_the_missing_variables(monkeypatch):
    for name in contract.ALL:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(hpo_trainer.TrialContextError, match="HPO_METRICS_FILE"):
        hpo_trainer.report(1, val_error=0.5)
