"""parse_metric_line: every way a line can be wrong has its own reason; NaN objectives are valid."""

import math

import pytest

from hpo_trainer import ErrorReason, MetricLineError, MetricRecord, parse_metric_line


@pytest.mark.parametrize(
    ("raw", "last_epoch", "reason", "words"),
    [
        (b'{"epoch": 1, "val_error": 0.5, "note": "\xff"}', None, ErrorReason.NOT_UTF8, "UTF-8"),
        (b'{"epoch": 1, "val_error": 0.5', None, ErrorReason.NOT_JSON, "not JSON"),
        (b"", None, ErrorReason.NOT_JSON, "not JSON"),
        (b"[1, 0.5]", None, ErrorReason.NOT_OBJECT, "list"),
        (b"0.5", None, ErrorReason.NOT_OBJECT, "float"),
        (b'{"val_error": 0.5}', None, ErrorReason.MISSING_EPOCH, '"epoch"'),
        (b'{"epoch": "3", "val_error": 0.5}', None, ErrorReason.BAD_EPOCH, "'3'"),
        (b'{"epoch": 3.0, "val_error": 0.5}', None, ErrorReason.BAD_EPOCH, "3.0"),
        (b'{"epoch": true, "val_error": 0.5}', None, ErrorReason.BAD_EPOCH, "True"),
        (b'{"epoch": 0, "val_error": 0.5}', None, ErrorReason.BAD_EPOCH, "positive"),
        (b'{"epoch": 3, "val_error": 0.5}', 3, ErrorReason.EPOCH_NOT_INCREASING, "repeated"),
        (b'{"epoch": 2, "val_error": 0.5}', 3, ErrorReason.EPOCH_NOT_INCREASING, "backwards"),
        (b'{"epoch": 4, "val_loss": 0.5}', 3, ErrorReason.MISSING_OBJECTIVE, "['val_loss']"),
        (b'{"epoch": 4, "val_error": "low"}', 3, ErrorReason.OBJECTIVE_NOT_NUMBER, "'low'"),
        (b'{"epoch": 4, "val_error": null}', 3, ErrorReason.OBJECTIVE_NOT_NUMBER, "None"),
        (b'{"epoch": 4, "val_error": false}', 3, ErrorReason.OBJECTIVE_NOT_NUMBER, "False"),
        (b'{"epoch": 4, "val_error": [0.5]}', 3, ErrorReason.OBJECTIVE_NOT_NUMBER, "[0.5]"),
    ],
)
def test_each_error_reason(raw, last_epoch, reason, words):
    result = parse_metric_line(raw, "val_error", last_epoch)
    assert isinstance(result, MetricLineError)
    assert result.reason is reason
    assert words in result.message
    assert reason.value in str(result)


def test_valid_line_keeps_every_metric():
    raw = b'{"epoch": 4, "val_error": 0.125, "val_loss": 0.4, "lr": "nan", "tag": "x", "time": 1700000000.5}\n'
    record = parse_metric_line(raw, "val_error", 3)
    assert isinstance(record, MetricRecord)
    assert (record.epoch, record.objective, record.value, record.time) == (4, "val_error", 0.125, 1700000000.5)
    assert record.metrics["val_loss"] == 0.4 and record.metrics["tag"] == "x"
    assert math.isnan(record.metrics["lr"])
    assert set(record.metrics) == {"val_error", "val_loss", "lr", "tag"}


@pytest.mark.parametrize(
    ("text", "check"),
    [
        (b'"nan"', math.isnan),
        (b'"inf"', lambda v: v == math.inf),
        (b'"-inf"', lambda v: v == -math.inf),
        (b"NaN", math.isnan),  # what Python's json.dumps writes by default: accepted on read
        (b"-Infinity", lambda v: v == -math.inf),
        (b"1" + b"0" * 400, lambda v: v == math.inf),  # an integer too big for a float
        (b"3", lambda v: v == 3.0 and isinstance(v, float)),
    ],
)
def test_nonfinite_and_integer_objectives_are_valid_records(text, check):
    record = parse_metric_line(b'{"epoch": 1, "val_error": ' + text + b"}", "val_error", None)
    assert isinstance(record, MetricRecord) and check(record.value)


def test_time_that_is_not_a_number_is_dropped_not_an_error():
    record = parse_metric_line(b'{"epoch": 1, "val_error": 0.5, "time": "noon"}', "val_error", None)
    assert isinstance(record, MetricRecord) and record.time is None


def test_other_objective_names():
    record = parse_metric_line(b'{"epoch": 2, "accuracy": 0.9}', "accuracy", 1)
    assert record.value == 0.9
