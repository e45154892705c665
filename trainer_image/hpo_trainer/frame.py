"""Checksummed frames: a checkpoint file's bytes, checksummed as they stream to and from disk.

    "HPOCKPT" | format (1 byte) | tag (1 byte) | payload | checksum of everything before it

The format byte says which checksum the trailer holds:

- 2: XXH3-128 (16 bytes), written when the xxhash package is installed. It
  runs at memory speed, so checking a checkpoint costs little next to
  reading it.
- 1: SHA-256 (32 bytes), written without xxhash, and by earlier versions of
  this SDK. Always readable.

The checksum tells a complete file from a truncated or damaged one; it is no
defence against someone who can write to the folder.

No copy of the payload is made. `FrameWriter` is a file that torch.save or
pickle.dump write into: each chunk goes to the sink and into the checksum.
`FrameReader` shows the payload as a seekable file to torch.load or
pickle.load and feeds the checksum from the very buffers the loader reads
into, as long as it reads in order; what it skips or reads out of order (the
zip directory at the end) is read a second time by `verify`.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

MAGIC = b"HPOCKPT"
HEADER_SIZE = len(MAGIC) + 2  # format byte, tag byte
# A reader that skips at most this much has the gap read and checksummed at
# once; a longer jump (to the zip directory at the end) waits for verify().
_REREAD_LIMIT = 1 << 20
_CHUNK = 1 << 20


class CorruptCheckpoint(Exception):
    """The file is not a complete checkpoint (truncated, damaged, or not ours)."""


class _Hash(Protocol):
    def update(self, data: Any, /) -> None: ...

    def digest(self) -> bytes: ...


@dataclass(frozen=True)
class Checksum:
    format: int
    name: str
    size: int
    new: Callable[[], _Hash]


def _new_xxh3_128() -> _Hash:
    try:
        import xxhash
    except ImportError as error:
        raise ImportError(
            "this checkpoint is checksummed with XXH3-128; install the xxhash package to read it (pip install xxhash)"
        ) from error
    return xxhash.xxh3_128()


SHA256 = Checksum(format=1, name="SHA-256", size=32, new=hashlib.sha256)
XXH3_128 = Checksum(format=2, name="XXH3-128", size=16, new=_new_xxh3_128)
CHECKSUMS = {c.format: c for c in (SHA256, XXH3_128)}


def default_checksum() -> Checksum:
    """XXH3-128 when the xxhash package is installed; else SHA-256 (several times slower)."""
    try:
        import xxhash  # noqa: F401
    except ImportError:
        return SHA256
    return XXH3_128


class FrameWriter:
    """A write-only file for torch.save / pickle.dump that passes every chunk to `sink` and the checksum."""

    def __init__(self, sink: Callable[[memoryview], Any], tag: bytes, checksum: Checksum):
        if len(tag) != 1:
            raise ValueError(f"tag must be one byte, not {tag!r}")
        self._sink = sink
        self._hash = checksum.new()
        self.write(MAGIC + bytes([checksum.format]) + tag)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._hash.update(view)
        self._sink(view)
        return view.nbytes

    def flush(self) -> None:
        """Nothing is buffered here; making the bytes durable is the caller's fsync."""

    def finish(self) -> None:
        """Append the checksum: the frame is complete."""
        self._sink(memoryview(self._hash.digest()))


class FrameReader(io.RawIOBase):
    """The payload of one frame file as a read-only, seekable file; `verify()` checks the whole frame.

    Raises CorruptCheckpoint when the file is unreadable, too short, or not a frame.
    """

    def __init__(self, path: Path | str):
        super().__init__()
        self.path = Path(path)
        self._file = None
        try:
            self._file = open(self.path, "rb", buffering=0)  # noqa: SIM115 (closed by close())
        except OSError as error:
            raise CorruptCheckpoint(f"{self.path}: cannot read: {error}") from error
        try:
            self._read_ends()
        except BaseException:
            self._file.close()
            raise

    def _read_ends(self) -> None:
        size = os.fstat(self._file.fileno()).st_size
        head = bytearray(HEADER_SIZE)
        got = self._read_at(0, memoryview(head))
        if got < HEADER_SIZE or not head.startswith(MAGIC):
            raise CorruptCheckpoint(f"{self.path}: not a checkpoint file or truncated ({size} bytes)")
        checksum = CHECKSUMS.get(head[len(MAGIC)])
        if checksum is None:
            raise CorruptCheckpoint(
                f"{self.path}: unknown checkpoint format {head[len(MAGIC)]} (written by a newer hpo_trainer?)"
            )
        if size < HEADER_SIZE + checksum.size:
            raise CorruptCheckpoint(f"{self.path}: truncated ({size} bytes)")
        self.checksum = checksum
        self.tag = bytes(head[-1:])
        self._start, self._end = HEADER_SIZE, size - checksum.size
        self._expected = bytearray(checksum.size)
        self._read_at(self._end, memoryview(self._expected))
        self._hash = checksum.new()
        self._hash.update(head)
        self._hashed = HEADER_SIZE  # file offset up to which the checksum has been fed
        self._pos = 0  # position in the payload
        self.verified = False

    @property
    def payload_size(self) -> int:
        return self._end - self._start

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.payload_size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = max(0, min(len(view), self.payload_size - self._pos))
        offset = self._start + self._pos
        got = self._read_at(offset, view[:want])
        self._absorb(offset, view[:got])
        self._pos += got
        return got

    def verify(self) -> None:
        """Raise CorruptCheckpoint unless the frame matches its checksum; reads only what was not fed yet."""
        if self.verified:
            return
        if not self._feed_from_file(self._hashed, self._end) or self._hash.digest() != self._expected:
            raise CorruptCheckpoint(f"{self.path}: checksum mismatch (truncated or damaged)")
        self.verified = True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()

    def _absorb(self, offset: int, data: memoryview) -> None:
        """Feed the checksum with bytes just read at `offset`, if they continue what it has seen."""
        end = offset + len(data)
        if end <= self._hashed or offset - self._hashed > _REREAD_LIMIT:
            return
        if offset > self._hashed and not self._feed_from_file(self._hashed, offset):
            return  # the file ended early; verify() will say so
        self._hash.update(data[self._hashed - offset:])
        self._hashed = end

    def _feed_from_file(self, start: int, stop: int) -> bool:
        """Read [start, stop) of the file into the checksum; False when the file ends first."""
        scratch = memoryview(bytearray(min(_CHUNK, max(0, stop - start))))
        while start < stop:
            got = self._read_at(start, scratch[:stop - start])
            if got == 0:
                self._hashed = start
                return False
            self._hash.update(scratch[:got])
            start += got
        self._hashed = stop
        return True

    def _read_at(self, offset: int, view: memoryview) -> int:
        self._file.seek(offset)
        got = 0
        while got < len(view):
            n = self._file.readinto(view[got:])
            if not n:
                break
            got += n
        return got
