"""Checkpoint files in a trial's checkpoint folder: save atomically, keep the last K, find the newest good one.

Layout: one file per epoch, ``epoch-000012.ckpt``, holding one checksummed
frame (see frame.py):

    "HPOCKPT" | format (1 byte) | serializer tag (1 byte) | payload | checksum (16 or 32 bytes)

The checksum lets anyone (the trainer, the local runner, a person) tell a
complete checkpoint from a truncated or damaged one without unpickling it and
without torch installed. The payload is ``torch.save`` output when torch is
already imported by the trainer (tensors are stored efficiently), plain pickle
otherwise, so a trainer that does not use torch never pays for importing it.
The payload streams between the serializer and the file: saving and loading
hold no second copy of it in memory.

The checkpoint that pruning drops is not deleted but kept as the folder's
spare (``.spare.ckpt``, never read as a checkpoint), and the next save writes
over it in place (see fsutil.atomic_file): the folder holds keep + 1 files
between saves, as many as it held during every save before.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from .frame import CorruptCheckpoint, FrameReader, FrameWriter, default_checksum
from .fsutil import atomic_file, is_temp_name, write_all

TAG_TORCH = b"t"
TAG_PICKLE = b"p"
_TAGS = {"torch": TAG_TORCH, "pickle": TAG_PICKLE}

DEFAULT_KEEP = 2
# Temp files older than this belong to a writer that died; a live writer
# touches its temp file continuously, so it is never this old.
STALE_TEMP_SECONDS = 600.0

_NAME = re.compile(r"^epoch-(\d{6,})\.ckpt$")
# Not a checkpoint name (no epoch) and not a temp name: neither listed nor cleaned as stale.
SPARE_NAME = ".spare.ckpt"
_PICKLE_BUFFER = 1 << 16


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


def _serializer(serializer: str | None) -> str:
    if serializer is None:
        return "torch" if sys.modules.get("torch") is not None else "pickle"
    if serializer not in _TAGS:
        raise ValueError(f"serializer must be 'torch', 'pickle' or None, not {serializer!r}")
    return serializer


def _write_frame(payload: Any, serializer: str, sink: Callable[[memoryview], Any]) -> None:
    writer = FrameWriter(sink, _TAGS[serializer], default_checksum())
    if serializer == "torch":
        import torch

        torch.save(payload, writer)
    else:
        pickle.dump(payload, writer, protocol=pickle.HIGHEST_PROTOCOL)
    writer.finish()


def encode(payload: Any, serializer: str | None = None) -> bytes:
    """The bytes `save` would write for `payload`. serializer: "torch", "pickle" or None (torch if already imported)."""
    buffer = io.BytesIO()
    _write_frame(payload, _serializer(serializer), buffer.write)
    return buffer.getvalue()


def is_valid(path: Path | str) -> bool:
    """True when the file is a complete checkpoint; reads it but does not unpickle."""
    try:
        with FrameReader(path) as reader:
            reader.verify()
    except (OSError, CorruptCheckpoint):
        return False
    return True


def load(path: Path | str, *, weights_only: bool = True) -> Any:
    """Verify and deserialize one checkpoint file.

    weights_only applies to torch payloads (as in torch.load): True allows
    tensors, numbers, strings and containers only. Pickle payloads are trusted,
    as they were written by the trial's own trainer into its own folder.
    """
    with FrameReader(path) as reader:
        if reader.tag not in _TAGS.values():
            raise CorruptCheckpoint(f"{reader.path}: unknown serializer tag {reader.tag!r}")
        if reader.tag == TAG_TORCH and weights_only:
            # The restricted unpickler builds nothing but tensors and plain
            # values, so it may run while the checksum is still being fed.
            torch = _import_torch(reader.path)
            try:
                payload = torch.load(reader, map_location="cpu", weights_only=True)
            except Exception:
                reader.verify()  # a damaged file explains the failure better than the unpickler can
                raise
            reader.verify()
            return payload
        # A full unpickler can run code: let it see only bytes that passed the checksum.
        reader.verify()
        if reader.tag == TAG_PICKLE:
            return pickle.load(io.BufferedReader(reader, _PICKLE_BUFFER))
        return _import_torch(reader.path).load(reader, map_location="cpu", weights_only=False)


def _import_torch(path: Path) -> Any:
    try:
        import torch
    except ImportError as error:
        raise ImportError(f"{path} was written with torch.save; install torch to load it") from error
    return torch


def save(
    directory: Path | str,
    epoch: int,
    payload: Any,
    *,
    keep: int = DEFAULT_KEEP,
    serializer: str | None = None,
    last: bool = False,
) -> Path:
    """Write the checkpoint of `epoch` atomically, then prune the folder.

    Pruning keeps the `keep` newest checkpoints up to `epoch` and deletes any
    newer than `epoch`: those belong to a run that was rolled back (the runner
    resumed from an earlier epoch), and leaving them would make `latest()`
    pick up a future that no longer exists. `last`: no save follows this one
    (the trial's final epoch), so no spare is kept for the next.
    """
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be a non-negative int, not {epoch!r}")
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    serializer = _serializer(serializer)
    directory = Path(directory)
    final = checkpoint_path(directory, epoch)
    with atomic_file(final, spare=directory / SPARE_NAME) as fd:
        _write_frame(payload, serializer, partial(write_all, fd))
    _prune(directory, epoch, keep, keep_spare=not last)
    return final


def _prune(directory: Path, epoch: int, keep: int, keep_spare: bool) -> None:
    existing = list_checkpoints(directory)
    older = [path for e, path in existing if e <= epoch]
    doomed = [path for e, path in existing if e > epoch] + older[:-keep]
    spare = directory / SPARE_NAME
    if not keep_spare:
        spare.unlink(missing_ok=True)
    for path in doomed:
        if keep_spare and not spare.exists():
            _replace_if_present(path, spare)  # the next save writes over it
        else:
            path.unlink(missing_ok=True)
    _remove_stale_temps(directory)


def _replace_if_present(source: Path, target: Path) -> None:
    try:
        os.replace(source, target)
    except FileNotFoundError:
        pass  # another cleaner took it


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
