"""Durable file writes shared by the metrics writer and the checkpoint store.

A trainer can be killed at any moment (pod eviction, pause, crash), and the
folders it writes to may be network volumes. These helpers make each write
either fully visible after a crash or not visible at all.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Temp files start with this prefix and a dot, so listings that look for
# finished files (checkpoints) never mistake a half-written one for real.
TEMP_PREFIX = "."
TEMP_MARK = ".tmp-"


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries, so a new or renamed file survives a power loss."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte; os.write may write fewer (full disk, signal) and says so."""
    view = memoryview(data).cast("B")  # count bytes, whatever the buffer's item type
    while view:
        written = os.write(fd, view)
        view = view[written:]


def temp_path_for(final: Path) -> Path:
    """A unique temp name in the same folder (os.replace is atomic only within one file system)."""
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    return final.with_name(f"{TEMP_PREFIX}{final.name}{TEMP_MARK}{token}")


def is_temp_name(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) and TEMP_MARK in name


@contextmanager
def atomic_file(final: Path, *, spare: Path | None = None) -> Iterator[int]:
    """Yield the fd of a new temp file that replaces `final` when the block ends without error.

    On success: fsync, rename over `final`, fsync the folder. Readers see
    either the old file or the complete new one, never a mix. On error the
    temp file is removed; a writer killed half way leaves only a temp file,
    which `is_temp_name` lets readers skip.

    `spare`: a file the caller no longer needs (see checkpoint.py). When it
    exists it becomes the temp file and is written over from its start, then
    cut to the new length. Rewriting blocks a file already owns spares the file
    system allocating new ones and freeing old ones (on a volume mounted with
    `discard`, also trimming them): for a 1 GB checkpoint on an ext4 disk that
    took longer than writing the data.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path_for(final)
    fd = _take_spare(spare, temp) if spare is not None else None
    if fd is None:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        yield fd
        os.ftruncate(fd, os.lseek(fd, 0, os.SEEK_CUR))  # a spare's old bytes past the new end go (new file: no-op)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(temp, final)
    fsync_dir(final.parent)


def _take_spare(spare: Path, temp: Path) -> int | None:
    """`spare` renamed to `temp` and opened for writing over; None when there is no spare."""
    try:
        os.rename(spare, temp)
        # Its modification time is its last write; as a temp file it must look alive to stale-temp cleaners.
        os.utime(temp)
        return os.open(temp, os.O_WRONLY)
    except FileNotFoundError:
        return None
