"""hpo_trainer.checkpoint: atomic files per epoch, keep-K, fall back past a damaged newest file."""

import os
import time

import pytest

from hpo_trainer import checkpoint
from hpo_trainer.fsutil import atomic_file, temp_path_for


def names(directory):
    return sorted(p.name for p in directory.iterdir())


def disk_fills_up(monkeypatch):
    """Every os.write from now on writes a few bytes, then fails as a full disk does."""
    real_write = os.write

    def failing_write(fd, data):
        real_write(fd, bytes(data)[:3])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", failing_write)


def test_save_names_files_by_epoch_and_keeps_the_last_two(tmp_path):
    for epoch in range(1, 6):
        checkpoint.save(tmp_path, epoch, {"epoch": epoch, "blob": b"\x00" * epoch})
    # The checkpoint pruning dropped waits as the spare the next save writes over.
    assert names(tmp_path) == [checkpoint.SPARE_NAME, "epoch-000004.ckpt", "epoch-000005.ckpt"]
    found = checkpoint.latest(tmp_path)
    assert (found.epoch, found.payload) == (5, {"epoch": 5, "blob": b"\x00" * 5})
    assert checkpoint.checkpoint_epoch(tmp_path) == 5


def test_keep_k(tmp_path):
    for epoch in range(1, 8):
        checkpoint.save(tmp_path, epoch, epoch, keep=3)
    assert [e for e, _ in checkpoint.list_checkpoints(tmp_path)] == [5, 6, 7]
    with pytest.raises(ValueError, match="keep"):
        checkpoint.save(tmp_path, 8, 8, keep=0)


def test_saving_an_earlier_epoch_drops_the_abandoned_future(tmp_path):
    for epoch in (4, 5, 6):
        checkpoint.save(tmp_path, epoch, epoch, keep=5)
    checkpoint.save(tmp_path, 5, "retrained", keep=5)  # the runner resumed from 4
    assert [e for e, _ in checkpoint.list_checkpoints(tmp_path)] == [4, 5]
    assert checkpoint.latest(tmp_path).payload == "retrained"


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "foreign"])
def test_damaged_newest_falls_back_to_the_previous(tmp_path, capsys, damage):
    checkpoint.save(tmp_path, 1, "one")
    newest = checkpoint.save(tmp_path, 2, "two")
    data = newest.read_bytes()
    newest.write_bytes({
        "truncate": data[: len(data) // 2],
        "flip": data[:20] + bytes([data[20] ^ 1]) + data[21:],
        "empty": b"",
        "foreign": b"PK\x03\x04 a zip that is no checkpoint" + b"\x00" * 64,
    }[damage])
    found = checkpoint.latest(tmp_path)
    assert (found.epoch, found.payload) == (1, "one")
    assert checkpoint.checkpoint_epoch(tmp_path) == 1
    assert not checkpoint.is_valid(newest)
    assert "skipped damaged checkpoint" in capsys.readouterr().err
    with pytest.raises(checkpoint.CorruptCheckpoint):
        checkpoint.load(newest)


def test_nothing_usable(tmp_path):
    assert checkpoint.latest(tmp_path / "missing") is None
    assert checkpoint.checkpoint_epoch(tmp_path / "missing") == 0
    checkpoint.checkpoint_path(tmp_path, 3).write_bytes(b"junk")
    assert checkpoint.latest(tmp_path) is None and checkpoint.checkpoint_epoch(tmp_path) == 0


def test_max_epoch_limits_the_search(tmp_path):
    for epoch in (3, 4):
        checkpoint.save(tmp_path, epoch, epoch)
    assert checkpoint.latest(tmp_path, max_epoch=3).epoch == 3
    assert checkpoint.checkpoint_epoch(tmp_path, max_epoch=3) == 3
    assert checkpoint.latest(tmp_path, max_epoch=2) is None


def test_temp_file_of_a_killed_writer_is_ignored_then_cleaned(tmp_path):
    checkpoint.save(tmp_path, 1, "one")
    # A writer killed after writing part of epoch 2: only its temp file exists.
    final = checkpoint.checkpoint_path(tmp_path, 2)
    partial = checkpoint.encode("two")
    temp = temp_path_for(final)
    temp.write_bytes(partial[:-5])
    assert checkpoint.latest(tmp_path).epoch == 1
    assert checkpoint.checkpoint_epoch(tmp_path) == 1
    fresh = temp_path_for(checkpoint.checkpoint_path(tmp_path, 3))
    fresh.write_bytes(b"in progress")  # a live writer's temp file must survive a cleanup
    old = time.time() - checkpoint.STALE_TEMP_SECONDS - 60
    os.utime(temp, (old, old))
    checkpoint.save(tmp_path, 2, "two")
    assert not temp.exists() and fresh.exists()
    assert checkpoint.latest(tmp_path).payload == "two"


def test_save_leaves_no_temp_files_and_replaces_atomically(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, 1, "first")
    # Make the write fail half way: the old file must stay intact and no temp file remain.
    disk_fills_up(monkeypatch)
    with pytest.raises(OSError, match="No space"):
        checkpoint.save(tmp_path, 1, "second")
    monkeypatch.undo()
    assert names(tmp_path) == ["epoch-000001.ckpt"]
    assert checkpoint.latest(tmp_path).payload == "first"


def test_a_save_writes_over_the_dropped_checkpoint_in_place(tmp_path):
    big, small = b"\x01" * 300_000, b"\x02" * 1_000
    for epoch in (1, 2, 3):
        checkpoint.save(tmp_path, epoch, big)
    spare = tmp_path / checkpoint.SPARE_NAME
    dropped = spare.stat().st_ino  # epoch 1's file, dropped when epoch 3 was saved
    path = checkpoint.save(tmp_path, 4, small)
    # Epoch 4 reuses epoch 1's blocks (same inode), cut to its own length: no byte of the old payload is left.
    assert path.stat().st_ino == dropped
    assert path.read_bytes() == checkpoint.encode(small)
    assert checkpoint.latest(tmp_path).payload == small
    assert [e for e, _ in checkpoint.list_checkpoints(tmp_path)] == [3, 4]
    assert spare.exists() and spare.stat().st_ino != dropped  # epoch 2 is the next spare


def test_the_last_save_keeps_no_spare(tmp_path):
    for epoch in (1, 2, 3):
        checkpoint.save(tmp_path, epoch, epoch)
    checkpoint.save(tmp_path, 4, 4, last=True)  # a finished trial's folder: its checkpoints only
    assert names(tmp_path) == ["epoch-000003.ckpt", "epoch-000004.ckpt"]
    assert checkpoint.latest(tmp_path).payload == 4


def test_a_failed_write_over_the_spare_loses_no_checkpoint(tmp_path, monkeypatch):
    for epoch in (1, 2, 3):
        checkpoint.save(tmp_path, epoch, epoch)
    disk_fills_up(monkeypatch)
    with pytest.raises(OSError, match="No space"):
        checkpoint.save(tmp_path, 4, 4)
    monkeypatch.undo()
    assert names(tmp_path) == ["epoch-000002.ckpt", "epoch-000003.ckpt"]  # the spare went, nothing else
    assert checkpoint.latest(tmp_path).payload == 3
    checkpoint.save(tmp_path, 4, 4)
    assert checkpoint.latest(tmp_path).payload == 4


def test_a_spare_being_written_looks_alive_to_stale_temp_cleaners(tmp_path):
    spare = tmp_path / checkpoint.SPARE_NAME
    spare.write_bytes(b"old checkpoint")
    old = time.time() - checkpoint.STALE_TEMP_SECONDS - 60
    os.utime(spare, (old, old))
    with atomic_file(tmp_path / "epoch-000001.ckpt", spare=spare) as fd:
        # A cleaner sweeping the folder now (another writer's prune) must not take the temp file.
        assert os.fstat(fd).st_mtime > time.time() - checkpoint.STALE_TEMP_SECONDS
        os.write(fd, b"new")
    assert (tmp_path / "epoch-000001.ckpt").read_bytes() == b"new"


def test_serializers(tmp_path):
    import torch
    tensor = torch.arange(6.0)
    path = checkpoint.save(tmp_path, 1, {"w": tensor}, serializer="torch")
    assert path.read_bytes()[8:9] == checkpoint.TAG_TORCH
    assert torch.equal(checkpoint.load(path)["w"], tensor)
    path = checkpoint.save(tmp_path, 2, {"w": [1, 2]}, serializer="pickle")
    assert path.read_bytes()[8:9] == checkpoint.TAG_PICKLE
    with pytest.raises(ValueError, match="serializer"):
        checkpoint.save(tmp_path, 3, {}, serializer="json")


def test_weights_only_refuses_arbitrary_objects_in_torch_payloads(tmp_path):
    import torch  # noqa: F401  (the torch serializer needs it)
    path = checkpoint.save(tmp_path, 1, {"when": time.struct_time((2024,) + (1,) * 8)}, serializer="torch")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        checkpoint.load(path)
    assert checkpoint.load(path, weights_only=False)["when"].tm_year == 2024
