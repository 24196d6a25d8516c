"""Line index of a log: where lines start, one entry per 64 KiB block, so that a client shows
line L of a huge log by fetching one block (a byte range) and counting newlines in it.

Entry b is the byte offset of the first line that starts at or after b * BLOCK, and that
line's number (0-based). A line starts at 0 and after every newline, even one that ends the
log (the next line starts there once bytes come). While no line starts between a block's
start and the end of the log, its entry is [size, lines]: the line after the last one, not yet
begun. The scan reads the file in chunks and leaves the work to bytes.find and bytes.count
(in C); an index is kept per (job, attempt) in a small LRU, so a client asking again while the
log grows pays only for the bytes added since.
"""

from __future__ import annotations

import asyncio
import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

BLOCK = 64 * 1024
CHUNK = 16 * BLOCK  # bytes read at a time: 1 MiB
MAX_INDEXES = 64  # logs whose index is kept (an index of 100 MB is ~25 KB)

Reader = Callable[[int, int], bytes]  # (offset, limit) -> at most limit bytes from offset


class LineIndex:
    """The index of one log's first `size` bytes; `extend` feeds it the bytes that follow."""

    __slots__ = ("_lock", "ends_line", "lines_before", "newlines", "offsets", "size")

    def __init__(self) -> None:
        self.size = 0  # bytes scanned
        self.newlines = 0  # b"\n" among them
        self.ends_line = True  # a line starts at `size` (no bytes yet, or the last is b"\n")
        self.offsets = array("q")  # of the blocks whose entry is known, block b at index b
        self.lines_before = array("q")  # the line number of each
        self._lock = threading.Lock()

    @property
    def lines(self) -> int:
        """Lines so far, a last one without its newline included."""
        return self.newlines + (0 if self.ends_line else 1)

    def extend(self, data: bytes) -> None:
        """Scan `data`, the bytes at [size, size + len(data)) of the log."""
        if not data:
            return
        pos, end = self.size, self.size + len(data)
        counted, counted_to = self.newlines, 0  # newlines in the log before pos + counted_to
        found = -1  # index in `data` of the newline last found
        block = len(self.offsets)
        while block * BLOCK < end:
            start = block * BLOCK
            if start <= pos and self.ends_line:
                # A line starts at pos (the log's start, or the last byte scanned before was a
                # newline) and this block, starting there, was not there to take it then.
                self._known(pos, self.newlines)
                block += 1
                continue
            # Else a line starts at or after `start` after a newline at start - 1 or later;
            # blocks still unknown had none before pos.
            since = max(start - 1, pos) - pos
            if found < since:
                found = data.find(b"\n", since)
                if found < 0:
                    break  # no line starts in this block yet, nor in the later ones
                counted += data.count(b"\n", counted_to, found)
                counted_to = found
            self._known(pos + found + 1, counted + 1)  # several blocks may share one line
            block += 1
        self.newlines = counted + data.count(b"\n", counted_to)
        self.size = end
        self.ends_line = data.endswith(b"\n")

    def _known(self, offset: int, line: int) -> None:
        self.offsets.append(offset)
        self.lines_before.append(line)

    def catch_up(self, size: int, read: Reader) -> dict[str, Any]:
        """Scan up to `size` with `read` (from a worker thread: it blocks) and return the
        index as the REST route shows it. Calls for one log run one at a time."""
        with self._lock:
            while self.size < size:
                data = read(self.size, min(CHUNK, size - self.size))
                if not data:
                    break  # shorter than said (cannot happen to an append-only log): stop here
                self.extend(data)
            return self.view()

    def view_now(self, size: int) -> dict[str, Any] | None:
        """The index, if it covers `size` and no thread is extending it; else None."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self.view() if self.size >= size else None
        finally:
            self._lock.release()

    def view(self) -> dict[str, Any]:
        starts = [[o, n] for o, n in zip(self.offsets, self.lines_before, strict=True)]
        blocks = -(-self.size // BLOCK)
        pending = [self.size, self.lines]
        starts += [pending] * (blocks - len(starts))
        return {"size": self.size, "lines": self.lines, "block": BLOCK, "starts": starts}


class LineIndexes:
    """The indexes of the logs asked about most recently (an LRU of MAX_INDEXES)."""

    def __init__(self, limit: int = MAX_INDEXES) -> None:
        self._limit = max(1, limit)
        self._indexes: OrderedDict[tuple[str, int], LineIndex] = OrderedDict()

    def __len__(self) -> int:
        return len(self._indexes)

    async def index(self, job_id: str, attempt: int, size: int, read: Reader) -> dict[str, Any]:
        """The index of the log's first `size` bytes: the cached one, extended by the bytes
        after it (read in a worker thread, as the scan blocks)."""
        key = (job_id, attempt)
        index = self._indexes.get(key)
        if index is None:
            index = self._indexes[key] = LineIndex()
        self._indexes.move_to_end(key)
        while len(self._indexes) > self._limit:
            self._indexes.popitem(last=False)
        # Nothing new to scan, and no other call scanning it: answer here, not in a thread.
        # (An index already past `size`, scanned for a later call, is the log all the same.)
        ready = index.view_now(size)
        if ready is not None:
            return ready
        return await asyncio.to_thread(index.catch_up, size, read)
