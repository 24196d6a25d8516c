"""One writer thread owns a SQLite connection and group-commits the operations queued to it.

Every async call becomes an operation on a queue. The writer thread drains what is queued, runs
it in one transaction (optimistically without savepoints; if a write fails, e.g. with a
ConflictError, the batch is rolled back and run again with a SAVEPOINT per write, so one
operation's error does not undo its neighbours), commits once (WAL, synchronous=FULL: one
fsync per batch) and only then resolves the callers' futures. Reads go through the same thread,
so they always see committed writes. What the operations do is the caller's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hodei.errors import StoreError

__all__ = ["MAX_BATCH", "SqliteWriter"]

MAX_BATCH = 500

_T = TypeVar("_T")
_Conn = sqlite3.Connection


@dataclass(slots=True)
class _Waiter:
    """A future owned by `loop`, resolved from the writer thread."""

    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


@dataclass(slots=True)
class _Op(_Waiter):
    fn: Callable[[_Conn], Any]
    write: bool


_Outcome = tuple[_Waiter, Any, BaseException | None]


def _resolve_all(items: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in items:
        if future.done():  # the awaiting task was cancelled
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _deliver(outcomes: list[_Outcome]) -> None:
    """Resolve futures with one wake-up per event loop rather than one per operation."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, Any]]] = {}
    for waiter, result, error in outcomes:
        by_loop.setdefault(waiter.loop, []).append((waiter.future, result, error))
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # loop closed: nobody is waiting any more
            loop.call_soon_threadsafe(_resolve_all, items)


def _take_batch(
    q: queue.SimpleQueue[_Op | _Waiter], limit: int
) -> tuple[list[_Op], _Waiter | None]:
    """Block for one item, then take whatever else is already queued (up to `limit` ops).
    Returns the ops and the stop request if one was reached."""
    batch: list[_Op] = []
    item = q.get()
    while True:
        if not isinstance(item, _Op):
            return batch, item
        batch.append(item)
        if len(batch) >= limit:
            return batch, None
        try:
            item = q.get_nowait()
        except queue.Empty:
            return batch, None


def _rollback(conn: _Conn) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


class _Retry(Exception):
    """A write failed in a batch run without savepoints: run the batch again with them."""


def _run_fast(conn: _Conn, op: _Op) -> tuple[Any, BaseException | None]:
    """Run one op with no savepoint (two statements fewer per write). A failing write raises
    _Retry: only a rollback of the whole transaction can undo what it may have done."""
    try:
        return op.fn(conn), None
    except sqlite3.Error:
        raise
    except Exception as exc:
        if op.write:
            raise _Retry from exc
        return None, exc


def _run_op(conn: _Conn, op: _Op) -> tuple[Any, BaseException | None]:
    """Run one op; a non-database error (ConflictError, NotFoundError, a bug) undoes only this
    op. A sqlite3.Error propagates: the database itself failed and the batch is lost."""
    if op.write:
        conn.execute("SAVEPOINT op")
    try:
        result = op.fn(conn)
    except sqlite3.Error:
        raise
    except Exception as exc:
        if op.write:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
        return None, exc
    if op.write:
        conn.execute("RELEASE op")
    return result, None


class SqliteWriter:
    """The writer thread of the SQLite file `path`. `prepare` runs on each new connection, in
    the thread, after the PRAGMAs (e.g. to migrate the schema); `what` names the database in
    errors. `await open()` before `submit`, `await close()` when done."""

    def __init__(
        self,
        path: Path,
        what: str,
        prepare: Callable[[_Conn], None],
        *,
        max_batch: int = MAX_BATCH,
        busy_timeout_ms: int = 5000,
        on_commit: Callable[[float], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.what = what
        self.commits = 0  # committed write transactions; each may carry many operations
        self._on_commit = on_commit  # told each write transaction's seconds, in the thread
        self._prepare = prepare
        self._max_batch = max(1, max_batch)
        self._busy_timeout_ms = max(0, int(busy_timeout_ms))
        self._queue: queue.SimpleQueue[_Op | _Waiter] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- lifecycle

    async def open(self) -> None:
        """Create the file (and parent directories) if needed and start the thread. StoreError
        if the database cannot be opened or `prepare` refuses it."""
        if self._thread is not None:
            return
        loop = asyncio.get_running_loop()
        ready = _Waiter(loop.create_future(), loop)
        self._queue = queue.SimpleQueue()
        # Daemon: a process that exits without close() must not hang on the idle thread; every
        # acknowledged write was already committed.
        self._thread = threading.Thread(
            target=self._thread_main,
            args=(self._queue, ready),
            name=f"hodei-sqlite-{self.path.name}",
            daemon=True,
        )
        self._closed = False
        self._thread.start()
        try:
            await ready.future
        except BaseException:
            await self._shutdown()
            raise

    async def close(self) -> None:
        """Finish every queued operation, then stop the thread and close the connection."""
        self._closed = True
        await self._shutdown()

    async def _shutdown(self) -> None:
        thread, q = self._thread, self._queue
        if thread is None:
            return
        self._thread = None  # refuse new operations; queued ones run before the stop request
        loop = asyncio.get_running_loop()
        stopped = _Waiter(loop.create_future(), loop)
        q.put(stopped)
        await stopped.future
        thread.join()  # the thread resolves `stopped` as its last act, so this is immediate

    # -- submitting operations

    async def submit(self, fn: Callable[[_Conn], _T], *, write: bool) -> _T:
        """Run `fn` on the connection in the thread; its result once its batch has committed.
        `fn` may run twice (see the module docstring), so it must not change anything else."""
        if self._thread is None:
            state = "closed" if self._closed else "not open"
            raise StoreError(f"{self.what} is {state}")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._queue.put(_Op(future, loop, fn, write))
        return await future

    # -- the thread

    def _thread_main(self, q: queue.SimpleQueue[_Op | _Waiter], ready: _Waiter) -> None:
        conn: _Conn | None = None
        error: BaseException | None = None
        try:
            conn = self._connect()
        except StoreError as exc:
            error = exc
        except Exception as exc:
            error = self._error(exc)
        _deliver([(ready, None, error)])
        self._serve(q, conn)

    def _serve(self, q: queue.SimpleQueue[_Op | _Waiter], conn: _Conn | None) -> None:
        while True:
            batch, stop = _take_batch(q, self._max_batch)
            if batch and conn is None:  # opening failed; answer until open() stops us
                _deliver([(op, None, StoreError(f"{self.what} is not open")) for op in batch])
            elif batch and conn is not None:
                self._run_batch(conn, batch)
            if stop is not None:
                if conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        conn.close()
                _deliver([(stop, None, None)])
                return

    def _run_batch(self, conn: _Conn, batch: list[_Op]) -> None:
        write = any(op.write for op in batch)
        outcomes: list[_Outcome] = []
        try:
            # IMMEDIATE takes the write lock up front (waiting busy_timeout for it) instead of
            # failing with SQLITE_BUSY when a read transaction tries to upgrade.
            begin = "BEGIN IMMEDIATE" if write else "BEGIN"
            started = time.perf_counter()
            conn.execute(begin)
            try:
                for op in batch:
                    result, error = _run_fast(conn, op)
                    outcomes.append((op, result, error))
            except _Retry:  # rare (a lost race, a duplicate id): ops are pure, run them again
                conn.execute("ROLLBACK")
                conn.execute(begin)
                outcomes = []
                for op in batch:
                    result, error = _run_op(conn, op)
                    outcomes.append((op, result, error))
            conn.execute("COMMIT")
        except Exception as exc:  # sqlite3.Error, or a bug: nothing of this batch is durable
            _rollback(conn)
            _deliver([(op, None, self._error(exc)) for op in batch])
            return
        if write:
            self.commits += 1
            if self._on_commit is not None:
                self._on_commit(time.perf_counter() - started)
        _deliver(outcomes)

    def _connect(self) -> _Conn:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the directory of {self.path}: {exc}") from exc
        deadline = time.monotonic() + max(1.0, self._busy_timeout_ms / 1000)
        delay = 0.01
        while True:
            conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=self._busy_timeout_ms / 1000
            )
            try:
                self._set_up(conn)
                return conn
            except sqlite3.OperationalError as exc:
                _rollback(conn)
                conn.close()
                # Servers opening a new file together: SQLite answers BUSY at once (no busy
                # wait) when two connections would deadlock switching it to WAL; try again.
                busy = getattr(exc, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED")
                if not busy or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
            except BaseException:
                _rollback(conn)
                conn.close()
                raise

    def _set_up(self, conn: _Conn) -> None:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{self.what}: cannot enable WAL (mode is {mode})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        self._prepare(conn)

    def _error(self, exc: BaseException) -> StoreError:
        code = getattr(exc, "sqlite_errorname", None)  # e.g. SQLITE_FULL, SQLITE_CORRUPT
        detail = f"{exc} ({code})" if code else f"{exc!r}"
        return StoreError(f"{self.what} failed: {detail}")
