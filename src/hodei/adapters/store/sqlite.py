"""SQLite JobStore: one writer thread owns the connection and group-commits queued operations.

Every async call becomes an operation on a queue. The writer thread drains what is queued, runs
it in one transaction (optimistically without savepoints; if a write fails, e.g. with a
ConflictError, the batch is rolled back and run again with a SAVEPOINT per write, so one
operation's error does not undo its neighbours), commits once (WAL, synchronous=FULL: one
fsync per batch) and only then resolves the callers' futures. Reads go through the same thread,
so they always see committed writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hodei.adapters.store.common import (
    ATTEMPT_CONFLICT,
    ATTEMPT_FIELDS,
    AUDIT_FIELDS,
    AUDIT_INSERT_FIELDS,
    INSERT_FIELDS,
    JOB_FIELDS,
    MAX_PAGE,
    MUTABLE_FIELDS,
    TOKEN_FIELDS,
    Migration,
    attempt_params,
    audit_action_filter,
    audit_params,
    check_changes,
    job_params,
    pending_migrations,
    row_to_attempt,
    row_to_audit,
    row_to_job,
    row_to_token,
    state_values,
    token_params,
    transition_conflict,
)
from hodei.domain.access import AuditEntry, TokenRecord
from hodei.domain.attempts import Attempt
from hodei.domain.jobs import Job, JobSpec, JobState
from hodei.errors import ConflictError, NotFoundError, StoreError
from hodei.ports import SecretRecord

__all__ = ["MIGRATIONS", "MUTABLE_FIELDS", "SCHEMA_VERSION", "SqliteJobStore"]

MAX_BATCH = 500
_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)  # UPDATE ... RETURNING
_CHUNK = 500  # stay well under SQLite's bound-parameter limit

_T = TypeVar("_T")
_Conn = sqlite3.Connection

# Version 1 predates the migration list and used IF NOT EXISTS; it stays as released.
_V1 = (
    """CREATE TABLE IF NOT EXISTS jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        priority INTEGER NOT NULL,
        created_at REAL NOT NULL,
        exit_code INTEGER,
        attempts INTEGER NOT NULL,
        worker_id TEXT,
        started_at REAL,
        finished_at REAL,
        reason TEXT NOT NULL,
        spec TEXT NOT NULL
    )""",
    # Queue rebuilds scan by (state, priority, seq); list_jobs(state=...) pages by (state, seq).
    "CREATE INDEX IF NOT EXISTS jobs_state_priority_seq ON jobs (state, priority, seq)",
    "CREATE INDEX IF NOT EXISTS jobs_state_seq ON jobs (state, seq)",
    """CREATE TABLE IF NOT EXISTS secrets (
        name TEXT PRIMARY KEY,
        ciphertext BLOB NOT NULL,
        updated_at REAL NOT NULL
    )""",
)
_V2 = (
    # NULL for "no key": a UNIQUE index admits any number of NULLs.
    "ALTER TABLE jobs ADD COLUMN idempotency_key TEXT",
    "CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key)",
    """CREATE TABLE attempts (
        job_id TEXT NOT NULL,
        number INTEGER NOT NULL,
        state TEXT NOT NULL,
        worker_id TEXT,
        exit_code INTEGER,
        assigned_at REAL,
        started_at REAL,
        finished_at REAL,
        reason TEXT NOT NULL,
        PRIMARY KEY (job_id, number)
    )""",
)
_V3 = (
    """CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        created_at REAL NOT NULL,
        revoked_at REAL
    )""",
    """CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL
    )""",
    "CREATE INDEX audit_action ON audit (action, seq)",
)
# The schema, step by step: a database at version N gets steps N+1.. applied on open.
MIGRATIONS: tuple[Migration, ...] = (
    Migration("jobs, secrets and queue indexes", _V1),
    Migration("idempotency keys and attempt records", _V2),
    Migration("API tokens and the audit trail", _V3),
    Migration("retry backoff kept with the job", ("ALTER TABLE jobs ADD COLUMN not_before REAL",)),
)
SCHEMA_VERSION = len(MIGRATIONS)

_SELECT = f"SELECT {', '.join(JOB_FIELDS)} FROM jobs"
_INSERT = (
    f"INSERT INTO jobs ({', '.join(INSERT_FIELDS)}, priority) "
    f"VALUES ({', '.join('?' * (len(INSERT_FIELDS) + 1))})"
)
_UPSERT_ATTEMPT = (
    f"INSERT INTO attempts ({', '.join(ATTEMPT_FIELDS)}) "
    f"VALUES ({', '.join('?' * len(ATTEMPT_FIELDS))}) {ATTEMPT_CONFLICT}"
)


def _fetch_job(conn: _Conn, job_id: str) -> Job:
    row = conn.execute(f"{_SELECT} WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no job {job_id}")
    return row_to_job(row)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


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


def _insert_job(conn: _Conn, job: Job, params: Sequence[Any]) -> Job:
    """ConflictError when the id, or the idempotency key, is already another job's."""
    try:
        cursor = conn.execute(_INSERT, params)
    except sqlite3.IntegrityError:
        if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job.id,)).fetchone():
            raise ConflictError(f"job {job.id} already exists") from None
        key = job.idempotency_key
        sql = "SELECT id FROM jobs WHERE idempotency_key = ?"
        if key is not None and (row := conn.execute(sql, (key,)).fetchone()):
            raise ConflictError(f"idempotency key already used by job {row[0]}") from None
        raise
    return job.with_changes(seq=cursor.lastrowid)


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


class SqliteJobStore:
    """JobStore on one SQLite file. `await open()` before use, `await close()` when done."""

    def __init__(
        self,
        path: Path,
        *,
        max_batch: int = MAX_BATCH,
        busy_timeout_ms: int = 5000,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self.path = Path(path)
        self.migrations = tuple(migrations)
        self.commits = 0  # committed write transactions; each may carry many operations
        self._max_batch = max(1, max_batch)
        self._busy_timeout_ms = max(0, int(busy_timeout_ms))
        self._queue: queue.SimpleQueue[_Op | _Waiter] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- lifecycle

    async def open(self) -> None:
        """Create the file (and parent directories) if needed and start the writer thread.
        StoreError if the database cannot be opened or is from a newer Hodei."""
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

    # -- writer thread

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
                _deliver(
                    [(op, None, StoreError(f"job store {self.path} is not open")) for op in batch]
                )
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
                self._prepare(conn)
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

    def _prepare(self, conn: _Conn) -> None:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"job store {self.path}: cannot enable WAL (mode is {mode})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        self._migrate(conn)

    def _migrate(self, conn: _Conn) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value NOT NULL)")
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        try:
            version = int(row[0]) if row is not None else 0
        except (TypeError, ValueError):
            raise StoreError(f"job store {self.path}: bad schema_version {row[0]!r}") from None
        # One transaction under the write lock: two servers opening one file do not race, and a
        # failing step leaves the database at its old version.
        for number, step in pending_migrations(version, self.migrations, f"job store {self.path}"):
            for statement in step.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (number,)
            )
        conn.execute("COMMIT")

    def _error(self, exc: BaseException) -> StoreError:
        code = getattr(exc, "sqlite_errorname", None)  # e.g. SQLITE_FULL, SQLITE_CORRUPT
        detail = f"{exc} ({code})" if code else f"{exc!r}"
        return StoreError(f"job store {self.path} failed: {detail}")

    # -- submitting operations

    async def _submit(self, fn: Callable[[_Conn], _T], *, write: bool) -> _T:
        if self._thread is None:
            state = "closed" if self._closed else "not open"
            raise StoreError(f"job store {self.path} is {state}")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._queue.put(_Op(future, loop, fn, write))
        return await future

    # -- jobs

    async def create_job(self, job: Job) -> Job:
        """Insert a new job; returns it with `seq` set. ConflictError if the id exists."""
        params = job_params(job)
        return await self._submit(lambda conn: _insert_job(conn, job, params), write=True)

    async def create_jobs(self, jobs: Sequence[Job]) -> list[Job | ConflictError]:
        rows = [(job, job_params(job)) for job in jobs]

        def op(conn: _Conn) -> list[Job | ConflictError]:
            out: list[Job | ConflictError] = []
            for job, params in rows:
                try:  # a refused INSERT undoes only itself: the others stay in the transaction
                    out.append(_insert_job(conn, job, params))
                except ConflictError as exc:
                    out.append(exc)
            return out

        return await self._submit(op, write=True) if rows else []

    async def job_by_idempotency_key(self, key: str) -> Job | None:
        def op(conn: _Conn) -> Job | None:
            row = conn.execute(f"{_SELECT} WHERE idempotency_key = ?", (key,)).fetchone()
            return row_to_job(row) if row is not None else None

        return await self._submit(op, write=False)

    async def get_job(self, job_id: str) -> Job:
        """NotFoundError if there is no such job."""
        return await self._submit(lambda conn: _fetch_job(conn, job_id), write=False)

    async def list_jobs(
        self, state: JobState | None = None, limit: int = 100, cursor: int | None = None
    ) -> tuple[list[Job], int | None]:
        """Newest first. `cursor` is the `seq` below which to continue; returns (items, next)."""
        limit = max(1, min(MAX_PAGE, int(limit)))
        where: list[str] = []
        params: list[Any] = []
        if state is not None:
            where.append("state = ?")
            params.append(JobState(state).value)
        if cursor is not None:
            where.append("seq < ?")
            params.append(int(cursor))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        sql = f"{_SELECT}{clause} ORDER BY seq DESC LIMIT ?"
        params.append(limit + 1)  # one extra row tells whether there is a next page

        def op(conn: _Conn) -> tuple[list[Job], int | None]:
            rows = conn.execute(sql, params).fetchall()
            items = [row_to_job(row) for row in rows[:limit]]
            return items, (items[-1].seq if len(rows) > limit else None)

        return await self._submit(op, write=False)

    async def pending_jobs(self, limit: int | None = None) -> list[Job]:
        """Queued jobs in dispatch order: higher priority first, then oldest first."""
        # -1: no limit in SQLite. The (state, priority, seq) index serves this order.
        sql = f"{_SELECT} WHERE state = ? ORDER BY priority DESC, seq LIMIT ?"
        params = (JobState.QUEUED.value, -1 if limit is None else max(0, int(limit)))
        return await self._submit(
            lambda conn: [row_to_job(row) for row in conn.execute(sql, params)], write=False
        )

    async def jobs_in_states(self, states: Collection[JobState]) -> list[Job]:
        """Every job in one of `states`, oldest first (used at start-up to rebuild queues)."""
        values = sorted({JobState(s).value for s in states})
        sql = f"{_SELECT} WHERE state IN ({_marks(len(values))}) ORDER BY seq"

        def op(conn: _Conn) -> list[Job]:
            if not values:
                return []
            return [row_to_job(row) for row in conn.execute(sql, values)]

        return await self._submit(op, write=False)

    async def transition(
        self,
        job_id: str,
        expected: Collection[JobState],
        target: JobState,
        changes: Mapping[str, Any] | None = None,
        attempt: Attempt | None = None,
        spec: JobSpec | None = None,
    ) -> Job:
        """Compare-and-swap: set state=target (and the given Job fields) only if the current
        state is in `expected`. Returns the updated job. ConflictError when the state was not in
        `expected` (the message names the actual state), NotFoundError when there is no job.
        ValueError for a `changes` key that is not one of MUTABLE_FIELDS. With `attempt`, the
        attempt record is upserted in the same transaction."""
        changes = check_changes(changes)
        states = state_values(expected)
        # Column names come from MUTABLE_FIELDS only (checked above), so formatting is safe.
        assignments = ", ".join(["state = ?", *(f"{key} = ?" for key in changes)])
        sql = f"UPDATE jobs SET {assignments} WHERE id = ? AND state IN ({_marks(len(states))})"
        if _RETURNING:  # the updated row in the same statement: no second SELECT per write
            sql += f" RETURNING {', '.join(JOB_FIELDS)}"
        params = [JobState(target).value, *changes.values(), job_id, *states]

        recorded = attempt_params(attempt) if attempt is not None else None

        def op(conn: _Conn) -> Job:
            if states and _RETURNING and (rows := conn.execute(sql, params).fetchall()):
                if recorded is not None:
                    conn.execute(_UPSERT_ATTEMPT, recorded)
                return row_to_job(rows[0], spec)
            if states and not _RETURNING and conn.execute(sql, params).rowcount == 1:
                if recorded is not None:
                    conn.execute(_UPSERT_ATTEMPT, recorded)
                return _fetch_job(conn, job_id)
            row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no job {job_id}")
            raise transition_conflict(job_id, row[0], states)

        return await self._submit(op, write=True)

    async def list_attempts(self, job_id: str) -> list[Attempt]:
        sql = f"SELECT {', '.join(ATTEMPT_FIELDS)} FROM attempts WHERE job_id = ? ORDER BY number"

        def op(conn: _Conn) -> list[Attempt]:
            return [row_to_attempt(row) for row in conn.execute(sql, (job_id,))]

        return await self._submit(op, write=False)

    # -- API tokens and the audit trail

    async def create_token(self, token: TokenRecord) -> None:
        params = token_params(token)
        sql = f"INSERT INTO tokens ({', '.join(TOKEN_FIELDS)}) VALUES ({_marks(len(params))})"

        def op(conn: _Conn) -> None:
            try:
                conn.execute(sql, params)
            except sqlite3.IntegrityError:
                raise ConflictError(f"token {token.id} already exists") from None

        await self._submit(op, write=True)

    async def get_token(self, token_id: str) -> TokenRecord | None:
        sql = f"SELECT {', '.join(TOKEN_FIELDS)} FROM tokens WHERE id = ?"

        def op(conn: _Conn) -> TokenRecord | None:
            row = conn.execute(sql, (token_id,)).fetchone()
            return row_to_token(row) if row is not None else None

        return await self._submit(op, write=False)

    async def list_tokens(self) -> list[TokenRecord]:
        sql = f"SELECT {', '.join(TOKEN_FIELDS)} FROM tokens ORDER BY created_at, id"
        return await self._submit(
            lambda conn: [row_to_token(row) for row in conn.execute(sql)], write=False
        )

    async def revoke_token(self, token_id: str, at: float) -> TokenRecord:
        select = f"SELECT {', '.join(TOKEN_FIELDS)} FROM tokens WHERE id = ?"

        def op(conn: _Conn) -> TokenRecord:
            sql = "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
            conn.execute(sql, (at, token_id))
            row = conn.execute(select, (token_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no token {token_id}")
            return row_to_token(row)

        return await self._submit(op, write=True)

    async def append_audit(self, *entries: AuditEntry) -> None:
        rows = [audit_params(entry) for entry in entries]
        if not rows:
            return
        columns = ", ".join(AUDIT_INSERT_FIELDS)
        sql = f"INSERT INTO audit ({columns}) VALUES ({_marks(len(rows[0]))})"

        def op(conn: _Conn) -> None:
            conn.executemany(sql, rows)

        await self._submit(op, write=True)

    async def list_audit(
        self,
        limit: int = 100,
        cursor: int | None = None,
        action: str | None = None,
        target: str | None = None,
    ) -> tuple[list[AuditEntry], int | None]:
        limit = max(1, min(MAX_PAGE, int(limit)))
        where: list[str] = []
        params: list[Any] = []
        if action:
            value, prefix = audit_action_filter(action)
            # substr, not LIKE: an action may contain '_' or '%'.
            where.append("substr(action, 1, ?) = ?" if prefix else "action = ?")
            params += [len(value), value] if prefix else [value]
        if target:
            where.append("target = ?")
            params.append(target)
        if cursor is not None:
            where.append("seq < ?")
            params.append(int(cursor))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {', '.join(AUDIT_FIELDS)} FROM audit{clause} ORDER BY seq DESC LIMIT ?"
        params.append(limit + 1)

        def op(conn: _Conn) -> tuple[list[AuditEntry], int | None]:
            rows = conn.execute(sql, params).fetchall()
            items = [row_to_audit(row) for row in rows[:limit]]
            return items, (items[-1].seq if len(rows) > limit else None)

        return await self._submit(op, write=False)

    # -- secrets

    async def put_secret(self, name: str, ciphertext: bytes) -> None:
        params = (name, bytes(ciphertext), time.time())

        def op(conn: _Conn) -> None:
            conn.execute(
                "INSERT INTO secrets (name, ciphertext, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET "
                "ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
                params,
            )

        await self._submit(op, write=True)

    async def get_secrets(self, names: Collection[str]) -> dict[str, bytes]:
        """Ciphertexts of the named secrets that exist (missing names are simply absent)."""
        wanted = sorted(set(names))

        def op(conn: _Conn) -> dict[str, bytes]:
            found: dict[str, bytes] = {}
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                sql = f"SELECT name, ciphertext FROM secrets WHERE name IN ({_marks(len(chunk))})"
                found.update((name, bytes(blob)) for name, blob in conn.execute(sql, chunk))
            return found

        return await self._submit(op, write=False)

    async def list_secrets(self) -> list[SecretRecord]:
        def op(conn: _Conn) -> list[SecretRecord]:
            rows = conn.execute("SELECT name, updated_at FROM secrets ORDER BY name")
            return [SecretRecord(name=name, updated_at=updated) for name, updated in rows]

        return await self._submit(op, write=False)

    async def delete_secret(self, name: str) -> None:
        """NotFoundError if there is no such secret."""

        def op(conn: _Conn) -> None:
            if conn.execute("DELETE FROM secrets WHERE name = ?", (name,)).rowcount == 0:
                raise NotFoundError(f"no secret {name}")

        await self._submit(op, write=True)
