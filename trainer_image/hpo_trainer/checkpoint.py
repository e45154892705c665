"""Checkpoint files in a trial's checkpoint folder: save atomically, keep the last K, find the newest good one.

Layout: one file per epoch, ``epoch-000012.ckpt``, holding

    MAGIC (8 bytes) | serializer tag (1 byte) | payload | SHA-256 of everything before it (32 bytes)

The checksum lets anyone (the trainer, the local runner, a person) tell a
complete checkpoint from a truncated or damaged one without unpickling it and
without torch installed. The payload is ``torch.save`` output when torch is
already imported by the trainer (tensors are stored efficiently), plain pickle
otherwise, so a trainer that does not use torch never pays for importing it.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fsutil import is_temp_name, write_atomic

MAGIC = b"HPOCKPT\x01"
TAG_TORCH = b"t"
TAG_PICKLE = b"p"
_TAGS = {TAG_TORCH: "torch", TAG_PICKLE: "pickle"}
_DIGEST = 32
_HEADER = len(MAGIC) + 1

DEFAULT_KEEP = 2
# Temp files older than this belong to a writer that died; a live writer
# touches its temp file continuously, so it is never this old.
STALE_TEMP_SECONDS = 600.0

_NAME = re.compile(r"^epoch-(\d{6,})\.ckpt$")


class CorruptCheckpoint(Exception):
    """The file is not a complete checkpoint (truncated, damaged, or not ours)."""


@dataclass(frozen=True)
class Checkpoint:
    epoch: int
    path: Path
    payload: Any


def checkpoint_path(directory: Path | str, epoch: int) -> Path:
    return Path(directory) / f"epoch-{epoch:06d}.ckpt"


def list_checkpoints(directory: Path | str) -> list[tuple[int, Path]]:
    """(epoch, path) of every finished checkpoint file, oldest first; missing folder -> []."""
    directory = Path(directory)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = _NAME.match(name)
        if match:
            found.append((int(match.group(1)), directory / name))
    return sorted(found)


def encode(payload: Any, serializer: str | None = None) -> bytes:
    """Frame `payload` as checkpoint bytes. serializer: "torch", "pickle" or None (torch if already imported)."""
    if serializer is None:
        serializer = "torch" if sys.modules.get("torch") is not None else "pickle"
    if serializer == "torch":
        import torch

        buffer = io.BytesIO()
        torch.save(payload, buffer)
        tag, body = TAG_TORCH, buffer.getvalue()
    elif serializer == "pickle":
        tag, body = TAG_PICKLE, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    else:
        raise ValueError(f"serializer must be 'torch', 'pickle' or None, not {serializer!r}")
    head = MAGIC + tag + body
    return head + hashlib.sha256(head).digest()


def _check_frame(data: bytes, path: Path) -> bytes:
    """Return the serializer tag if `data` is a complete frame, else raise CorruptCheckpoint."""
    if len(data) < _HEADER + _DIGEST or not data.startswith(MAGIC):
        raise CorruptCheckpoint(f"{path}: not a checkpoint file or truncated ({len(data)} bytes)")
    tag = data[len(MAGIC):_HEADER]
    if tag not in _TAGS:
        raise CorruptCheckpoint(f"{path}: unknown serializer tag {tag!r}")
    if hashlib.sha256(memoryview(data)[:-_DIGEST]).digest() != data[-_DIGEST:]:
        raise CorruptCheckpoint(f"{path}: checksum mismatch (truncated or damaged)")
    return tag


def is_valid(path: Path | str) -> bool:
    """True when the file is a complete checkpoint; reads it but does not unpickle."""
    path = Path(path)
    try:
        _check_frame(path.read_bytes(), path)
    except (OSError, CorruptCheckpoint):
        return False
    return True


def load(path: Path | str, *, weights_only: bool = True) -> Any:
    """Verify and deserialize one checkpoint file.

    weights_only applies to torch payloads (as in torch.load): True allows
    tensors, numbers, strings and containers only. Pickle payloads are trusted,
    as they were written by the trial's own trainer into its own folder.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CorruptCheckpoint(f"{path}: cannot read: {error}") from error
    tag = _check_frame(data, path)
    body = memoryview(data)[_HEADER:-_DIGEST]
    if tag == TAG_PICKLE:
        return pickle.loads(body)
    try:
        import torch
    except ImportError as error:
        raise ImportError(f"{path} was written with torch.save; install torch to load it") from error
    return torch.load(io.BytesIO(body), map_location="cpu", weights_only=weights_only)


def save(
    directory: Path | str,
    epoch: int,
    payload: Any,
    *,
    keep: int = DEFAULT_KEEP,
    serializer: str | None = None,
) -> Path:
    """Write the checkpoint of `epoch` atomically, then prune the folder.

    Pruning keeps the `keep` newest checkpoints up to `epoch` and deletes any
    newer than `epoch`: those belong to a run that was rolled back (the runner
    resumed from an earlier epoch), and leaving them would make `latest()`
    pick up a future that no longer exists.
    """
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be a non-negative int, not {epoch!r}")
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    directory = Path(directory)
    final = checkpoint_path(directory, epoch)
    write_atomic(final, encode(payload, serializer))
    _prune(directory, epoch, keep)
    return final


def _prune(directory: Path, epoch: int, keep: int) -> None:
    existing = list_checkpoints(directory)
    older = [path for e, path in existing if e <= epoch]
    doomed = [path for e, path in existing if e > epoch] + older[:-keep]
    for path in doomed:
        path.unlink(missing_ok=True)
    _remove_stale_temps(directory)


def _remove_stale_temps(directory: Path) -> None:
    cutoff = time.time() - STALE_TEMP_SECONDS
    for entry in os.scandir(directory):
        if not is_temp_name(entry.name):
            continue
        try:
            if entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
        except FileNotFoundError:
            pass  # its writer finished (renamed it) or another cleaner got it


def latest(
    directory: Path | str,
    *,
    max_epoch: int | None = None,
    weights_only: bool = True,
) -> Checkpoint | None:
    """The newest checkpoint (at most `max_epoch`) that loads; None when there is none.

    A damaged newest file (a crash on a volume without atomic rename, a disk
    error) is reported on stderr and skipped: the previous one is used, which
    is why `save` keeps two by default.
    """
    for epoch, path in reversed(list_checkpoints(directory)):
        if max_epoch is not None and epoch > max_epoch:
            continue
        try:
            return Checkpoint(epoch=epoch, path=path, payload=load(path, weights_only=weights_only))
        except CorruptCheckpoint as error:
            print(f"hpo_trainer: skipped damaged checkpoint: {error}", file=sys.stderr)
    return None


def checkpoint_epoch(directory: Path | str, *, max_epoch: int | None = None) -> int:
    """Epoch of the newest complete checkpoint (0 when none): where a runner resumes from.

    Checks checksums only, so it needs neither torch nor the trainer's classes.
    """
    for epoch, path in reversed(list_checkpoints(directory)):
        if (max_epoch is None or epoch <= max_epoch) and is_valid(path):
            return epoch
    return 0
