"""MetricsTail / MetricsReader: complete lines only, once each, surviving truncation, replacement, huge lines."""

import os

from hpo_trainer import ErrorReason, MetricLineError, MetricRecord, MetricsReader, MetricsTail, MetricsWriter


def append(path, data: bytes):
    with open(path, "ab") as f:
        f.write(data)


def test_missing_file_then_lines_as_they_complete(tmp_path):
    path = tmp_path / "m.jsonl"
    tail = MetricsTail(path)
    assert tail.read() == []
    append(path, b'{"epoch": 1}\n{"epoch": 2')  # second line torn: writer still writing
    assert tail.read() == [b'{"epoch": 1}']
    assert tail.read() == []
    assert tail.offset == len(b'{"epoch": 1}\n')
    append(path, b', "x": 1}\n')
    assert tail.read() == [b'{"epoch": 2, "x": 1}']
    assert tail.read() == []


def test_truncation_restarts_from_the_beginning(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"aaaa\nbbbb\n")
    tail = MetricsTail(path)
    assert tail.read() == [b"aaaa", b"bbbb"]
    path.write_bytes(b"cc\n")  # truncated in place and rewritten shorter
    assert tail.read() == [b"cc"]
    assert tail.restarts == 1


def test_truncated_and_regrown_past_the_offset_is_detected(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"aaaa\n")
    tail = MetricsTail(path)
    assert tail.read() == [b"aaaa"]
    with open(path, "r+b") as f:  # same inode, longer than before, old offset lands mid-line
        f.truncate(0)
        f.write(b"xyzxyzxyz\nq\n")
    assert tail.read() == [b"xyzxyzxyz", b"q"]
    assert tail.restarts == 1


def test_replaced_file_is_read_from_the_start(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"old-1\nold-2\n")
    tail = MetricsTail(path)
    assert tail.read() == [b"old-1", b"old-2"]
    other = tmp_path / "new.jsonl"
    other.write_bytes(b"new-1\nnew-2\nnew-3\n")  # larger than the old offset: size alone would miss it
    os.replace(other, path)
    assert tail.read() == [b"new-1", b"new-2", b"new-3"]
    assert tail.restarts == 1


def test_deleted_file_is_tolerated(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"a\n")
    tail = MetricsTail(path)
    assert tail.read() == [b"a"]
    path.unlink()
    assert tail.read() == []


def test_overlong_line_is_reported_once_and_skipped(tmp_path):
    path = tmp_path / "m.jsonl"
    tail = MetricsTail(path, max_line_bytes=100)
    append(path, b"ok-1\n" + b"x" * 70)
    assert tail.read() == [b"ok-1"]
    append(path, b"x" * 70)  # now 140 bytes, no newline yet: reported, not held
    items = tail.read()
    assert len(items) == 1 and isinstance(items[0], MetricLineError)
    assert items[0].reason is ErrorReason.LINE_TOO_LONG and "100 bytes" in items[0].message
    assert tail.offset == path.stat().st_size  # the reader moved past the bytes, keeping none
    append(path, b"x" * 100_000)
    assert tail.read() == []
    append(path, b"x\nok-2\n")
    assert tail.read() == [b"ok-2"]


def test_overlong_complete_line_in_one_read(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"a" * 300 + b"\nok\n" + b"b" * 200_000 + b"\nend\n")  # spans several read chunks
    items = MetricsTail(path, max_line_bytes=100).read()
    assert [type(i) for i in items] == [MetricLineError, bytes, MetricLineError, bytes]
    assert items[1] == b"ok" and items[3] == b"end"


def test_line_of_exactly_the_limit_is_kept(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"y" * 100 + b"\n")
    assert MetricsTail(path, max_line_bytes=100).read() == [b"y" * 100]


def test_offset_can_be_resumed(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"one\ntwo\n")
    first = MetricsTail(path)
    first.read()
    append(path, b"three\n")
    assert MetricsTail(path, offset=first.offset).read() == [b"three"]


def test_reader_yields_each_epoch_once_and_errors_in_between(tmp_path):
    path = tmp_path / "m.jsonl"
    writer = MetricsWriter(path)
    reader = MetricsReader(path, "val_error", last_epoch=1)
    writer.write(1, val_error=0.9)  # already accepted before a sidecar restart
    writer.write(2, val_error=0.5)
    append(path, b"garbage\n")
    writer.write(3, val_error=float("nan"))
    got = reader.poll()
    kinds = [(r.reason if isinstance(r, MetricLineError) else r.epoch) for r in got]
    assert kinds == [ErrorReason.EPOCH_NOT_INCREASING, 2, ErrorReason.NOT_JSON, 3]
    assert reader.last_epoch == 3 and reader.poll() == []
    path.unlink()
    writer.write(3, val_error=0.1)  # a recreated file repeating epoch 3 is not counted twice
    writer.write(4, val_error=0.1)
    got = reader.poll()
    assert [r.epoch for r in got if isinstance(r, MetricRecord)] == [4]
