"""FileLogStore: one append-only file per (job, attempt) at <root>/<job_id>/<attempt>.log.

Appends go straight to the kernel with os.write (no user-space buffer), so acknowledged bytes
survive a crash of this process; `seal` fsyncs them when the attempt ends.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from hodei.errors import StoreError

MAX_OPEN = 256
_Key = tuple[str, int]


@dataclass(slots=True)
class _Handle:
    fd: int
    size: int  # end offset, tracked here so append needs no stat


def _check_job_id(job_id: str) -> str:
    # The id becomes a directory name: refuse anything that could escape the root.
    if (
        not isinstance(job_id, str)
        or job_id in ("", ".")
        or ".." in job_id
        or any(c in job_id for c in ("/", "\\", "\x00"))
    ):
        raise ValueError(f"invalid job id for a log path: {job_id!r}")
    return job_id


def _check_attempt(attempt: int) -> int:
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0:
        raise ValueError(f"invalid attempt number: {attempt!r}")
    return attempt


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileLogStore:
    """LogStore on a directory tree. Thread-safe; keeps at most `max_open` append handles."""

    def __init__(self, root: Path, *, max_open: int = MAX_OPEN) -> None:
        self.root = Path(root)
        self._max_open = max(1, max_open)
        self._handles: OrderedDict[_Key, _Handle] = OrderedDict()  # LRU: oldest first
        self._lock = threading.Lock()

    @property
    def open_handles(self) -> int:
        return len(self._handles)

    def path(self, job_id: str, attempt: int) -> Path:
        """Where the log of this attempt lives. ValueError for an unsafe job id."""
        return self.root / _check_job_id(job_id) / f"{_check_attempt(attempt)}.log"

    def append(self, job_id: str, attempt: int, data: bytes) -> int:
        """Append and return the new end offset. The bytes survive a crash of the process.
        StoreError (with nothing half-written) when the disk refuses them."""
        if not data:
            return self.size(job_id, attempt)
        path = self.path(job_id, attempt)
        key = (job_id, attempt)
        with self._lock:
            handle = self._handle(key, path)
            self._write(key, path, handle, data)
            return handle.size

    def read(self, job_id: str, attempt: int, offset: int = 0, limit: int = -1) -> bytes:
        """Bytes from `offset`, at most `limit` (-1: all). Empty when nothing is stored."""
        if offset < 0:
            raise ValueError(f"offset must not be negative: {offset}")
        path = self.path(job_id, attempt)
        if limit == 0:
            return b""
        try:
            with path.open("rb") as f:
                if offset >= os.fstat(f.fileno()).st_size:
                    return b""  # past the end (e.g. an offset a client made up): nothing yet
                f.seek(offset)
                return f.read(limit if limit > 0 else -1)
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise StoreError(f"cannot read log {path}: {exc.strerror or exc}") from exc

    def size(self, job_id: str, attempt: int) -> int:
        path = self.path(job_id, attempt)
        with self._lock:
            handle = self._handles.get((job_id, attempt))
            if handle is not None:
                return handle.size
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StoreError(f"cannot stat log {path}: {exc.strerror or exc}") from exc

    def seal(self, job_id: str, attempt: int) -> None:
        """The attempt has ended: flush to stable storage and release open handles."""
        path = self.path(job_id, attempt)
        with self._lock:
            handle = self._handles.pop((job_id, attempt), None)
            try:
                if handle is not None:
                    os.fsync(handle.fd)
                elif path.exists():
                    _fsync_path(path)  # written earlier through a handle the LRU closed
                else:
                    return
                # The file's directory entries must be durable too, not just its bytes.
                _fsync_path(path.parent)
                _fsync_path(self.root)
            except OSError as exc:
                raise StoreError(f"cannot flush log {path}: {exc.strerror or exc}") from exc
            finally:
                if handle is not None:
                    os.close(handle.fd)

    def close(self) -> None:
        with self._lock:
            while self._handles:
                _, handle = self._handles.popitem()
                with contextlib.suppress(OSError):
                    os.close(handle.fd)

    # -- internals (called with the lock held)

    def _handle(self, key: _Key, path: Path) -> _Handle:
        handle = self._handles.get(key)
        if handle is not None:
            self._handles.move_to_end(key)
            return handle
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot open log {path}: {exc.strerror or exc}") from exc
        try:
            handle = _Handle(fd, os.fstat(fd).st_size)
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot stat log {path}: {exc.strerror or exc}") from exc
        self._handles[key] = handle
        while len(self._handles) > self._max_open:
            _, evicted = self._handles.popitem(last=False)
            with contextlib.suppress(OSError):
                os.close(evicted.fd)
        return handle

    def _write(self, key: _Key, path: Path, handle: _Handle, data: bytes) -> None:
        view = memoryview(data)
        done = 0
        try:
            while done < len(view):  # os.write may write less than asked (e.g. disk filling)
                n = os.write(handle.fd, view[done:])
                if n <= 0:
                    raise OSError(errno.EIO, "write made no progress")
                done += n
        except OSError as exc:
            self._undo(key, handle, done)
            raise StoreError(
                f"cannot append {len(data)} bytes to log {path}: {exc.strerror or exc}"
            ) from exc
        handle.size += done

    def _undo(self, key: _Key, handle: _Handle, written: int) -> None:
        """Cut a partial write back off, then drop the handle so the next append re-reads
        the size from the file (in case the cut failed too)."""
        if written:
            with contextlib.suppress(OSError):
                os.ftruncate(handle.fd, handle.size)
        self._handles.pop(key, None)
        with contextlib.suppress(OSError):
            os.close(handle.fd)
