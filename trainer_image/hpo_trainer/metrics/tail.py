"""Read a growing metrics file incrementally: only complete lines, each once.

The trainer appends while the sidecar (or local runner) polls. A poll must not
return a line the trainer is still writing, must survive the file not existing
yet, being truncated, or being replaced, and must not let one huge line (a
trainer bug) eat the reader's memory.
"""

from __future__ import annotations

import os
from pathlib import Path

from .parse import ErrorReason, MetricLineError

DEFAULT_MAX_LINE_BYTES = 1 << 20  # 1 MiB: far above any real metrics line
_CHUNK = 64 * 1024


class MetricsTail:
    """Incremental reader of one file; `read()` returns what was completed since the last call.

    Items are the lines' bytes (without the newline) or, for a line longer than
    max_line_bytes, a MetricLineError with reason LINE_TOO_LONG (reported once,
    when the limit is crossed; the rest of that line is skipped unread into memory).

    `offset` is the byte where the next unread line starts; a caller that
    persists it can resume after a restart with MetricsTail(path, offset=...).
    """

    def __init__(self, path: Path | str, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, offset: int = 0):
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be positive")
        self.path = Path(path)
        self.max_line_bytes = max_line_bytes
        self.offset = offset
        self.restarts = 0  # how often truncation or replacement made us start over
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file we read
        self._skipping = False  # inside an overlong line: offset points into its middle

    def read(self) -> list[bytes | MetricLineError]:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return []
        try:
            stat = os.fstat(fd)
            identity = (stat.st_dev, stat.st_ino)
            if self._identity is not None and identity != self._identity:
                self._restart()  # replaced (new inode): a new file starts at byte 0
            elif stat.st_size < self.offset or not self._follows_newline(fd):
                self._restart()  # truncated (and maybe regrown) under us
            self._identity = identity
            return self._read_lines(fd)
        finally:
            os.close(fd)

    def _restart(self) -> None:
        self.offset = 0
        self._skipping = False
        self.restarts += 1

    def _follows_newline(self, fd: int) -> bool:
        # The byte before a line start is always "\n"; anything else means the
        # file was truncated and written again past our offset.
        if self.offset == 0 or self._skipping:
            return True
        return os.pread(fd, 1, self.offset - 1) == b"\n"

    def _too_long(self, line_start: int, head: bytes) -> MetricLineError:
        return MetricLineError(
            ErrorReason.LINE_TOO_LONG,
            f"line at byte {line_start} of {self.path.name} is longer than {self.max_line_bytes} bytes; skipped",
            head[:120].decode("utf-8", errors="replace") + "...",
        )

    def _read_lines(self, fd: int) -> list[bytes | MetricLineError]:
        items: list[bytes | MetricLineError] = []
        pending = bytearray()  # the current line's bytes read so far in this call
        position = self.offset
        while chunk := os.pread(fd, _CHUNK, position):
            chunk_start = position
            position += len(chunk)
            start = 0
            while (newline := chunk.find(b"\n", start)) >= 0:
                if self._skipping:
                    self._skipping = False  # the overlong line ends here; it was reported
                else:
                    pending += chunk[start:newline]
                    if len(pending) > self.max_line_bytes:
                        items.append(self._too_long(self.offset, bytes(pending)))
                    else:
                        items.append(bytes(pending))
                pending.clear()
                start = newline + 1
                self.offset = chunk_start + start
            if self._skipping:
                self.offset = position  # drop the overlong line's bytes as we pass them
                continue
            pending += chunk[start:]
            if len(pending) > self.max_line_bytes:
                items.append(self._too_long(self.offset, bytes(pending)))
                pending.clear()
                self._skipping = True
                self.offset = position
        return items
