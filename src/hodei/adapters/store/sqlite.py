"""SQLite JobStore on one file: every query is an operation of the file's writer thread.

The thread and its group commit are sqlite_writer's (a batch commits before any caller's await
returns; reads see committed writes); the schema and its migration on open are sqlite_schema's;
pipeline runs and steps are sqlite_pipelines'.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from hodei.adapters.store.common import (
    ATTEMPT_CONFLICT,
    ATTEMPT_FIELDS,
    AUDIT_FIELDS,
    AUDIT_INSERT_FIELDS,
    INSERT_FIELDS,
    JOB_FIELDS,
    MUTABLE_FIELDS,
    TOKEN_FIELDS,
    Migration,
    attempt_params,
    audit_action_filter,
    audit_params,
    check_changes,
    job_params,
    label_fragment,
    newest_page,
    page_limit,
    row_to_attempt,
    row_to_audit,
    row_to_job,
    row_to_token,
    spec_fragment,
    state_values,
    token_params,
    transition_conflict,
)
from hodei.adapters.store.sqlite_common import RETURNING, marks, page_query
from hodei.adapters.store.sqlite_pipelines import SqlitePipelines
from hodei.adapters.store.sqlite_schedules import SqliteSchedules
from hodei.adapters.store.sqlite_schema import MIGRATIONS, SCHEMA_VERSION, migrate
from hodei.adapters.store.sqlite_writer import MAX_BATCH, SqliteWriter
from hodei.domain.access import AuditEntry, TokenRecord
from hodei.domain.attempts import Attempt
from hodei.domain.job_filter import JobFilter, fold, job_filter
from hodei.domain.jobs import Job, JobSpec, JobState
from hodei.errors import ConflictError, NotFoundError
from hodei.ports import SecretRecord

__all__ = ["MIGRATIONS", "MUTABLE_FIELDS", "SCHEMA_VERSION", "SqliteJobStore"]

_CHUNK = 500  # stay well under SQLite's bound-parameter limit

_Conn = sqlite3.Connection

_SELECT = f"SELECT {', '.join(JOB_FIELDS)} FROM jobs"
_SELECT_AUDIT = f"SELECT {', '.join(AUDIT_FIELDS)} FROM audit"
# A run's jobs: the few rows of an id range, sorted, rather than a walk down the seq key until
# they are found (what the planner picks once a cursor bounds seq). The index is the one of
# `id TEXT NOT NULL UNIQUE`.
_SELECT_BY_ID = f"{_SELECT} INDEXED BY sqlite_autoindex_jobs_1"
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


def _job_conditions(wanted: JobFilter) -> list[tuple[str, tuple[Any, ...]]]:
    """list_jobs' filters as SQL. The name and labels are read out of the spec's JSON text."""
    out: list[tuple[str, tuple[Any, ...]]] = []
    if wanted.state is not None:
        out.append(("state = ?", (wanted.state.value,)))
    if wanted.name:
        # SQLite's lower() folds ASCII letters only: the rule of job_filter.fold. The quick
        # test of the whole text first (common.spec_fragment), then the name itself.
        name = fold(wanted.name)
        test = "instr(lower(spec), ?) > 0 AND instr(lower(json_extract(spec, '$.name')), ?) > 0"
        out.append((test, (spec_fragment(name), name)))
    for key, value in wanted.labels:
        # Quoted, as a label key may hold '.' or '/'; check_labels let no '"' in.
        test = "instr(spec, ?) > 0 AND json_extract(spec, ?) = ?"
        out.append((test, (label_fragment(key, value), f'$.labels."{key}"', value)))
    if wanted.pipeline is not None:
        # A range of the id index: '/' is the character after '.'.
        out.append(("id >= ? AND id < ?", (f"{wanted.pipeline}.", f"{wanted.pipeline}/")))
    return out


def jobs_page_query(wanted: JobFilter, cursor: int | None, limit: int) -> tuple[str, list[Any]]:
    """The SQL and parameters of a list_jobs page (see page_query)."""
    select = _SELECT_BY_ID if wanted.pipeline is not None else _SELECT
    return page_query(select, _job_conditions(wanted), cursor, limit)


class SqliteJobStore(SqlitePipelines, SqliteSchedules):
    """JobStore on one SQLite file. `await open()` before use, `await close()` when done."""

    def __init__(
        self,
        path: Path,
        *,
        max_batch: int = MAX_BATCH,
        busy_timeout_ms: int = 5000,
        migrations: Sequence[Migration] = MIGRATIONS,
        on_commit: Callable[[float], None] | None = None,
    ) -> None:
        """`on_commit(seconds)` hears each write transaction's duration (from the writer
        thread)."""
        self.path = Path(path)
        self.migrations = tuple(migrations)
        what = f"job store {self.path}"
        self._writer = SqliteWriter(
            self.path,
            what,
            lambda conn: migrate(conn, self.migrations, what),
            max_batch=max_batch,
            busy_timeout_ms=busy_timeout_ms,
            on_commit=on_commit,
        )
        self._submit = self._writer.submit

    @property
    def commits(self) -> int:
        """Committed write transactions; each may carry many operations."""
        return self._writer.commits

    # -- lifecycle

    async def open(self) -> None:
        """Create the file (and parent directories) if needed and start the writer thread.
        StoreError if the database cannot be opened or is from a newer Hodei."""
        await self._writer.open()

    async def close(self) -> None:
        """Finish every queued operation, then stop the thread and close the connection."""
        await self._writer.close()

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
        self,
        state: JobState | None = None,
        limit: int = 100,
        cursor: int | None = None,
        *,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        pipeline: str | None = None,
    ) -> tuple[list[Job], int | None]:
        """JobRecords.list_jobs. A page walks the seq key (or the (state, seq) index) newest
        first and tests the other filters on each row it passes: no sort of the matches,
        except for `pipeline`, whose few jobs are read from an id range and sorted."""
        limit = page_limit(limit)
        wanted = job_filter(state, name, labels, pipeline)
        sql, params = jobs_page_query(wanted, cursor, limit)

        def op(conn: _Conn) -> tuple[list[Job], int | None]:
            return newest_page(conn.execute(sql, params).fetchall(), limit, row_to_job)

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
        sql = f"{_SELECT} WHERE state IN ({marks(len(values))}) ORDER BY seq"

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
        """JobStore.transition: one UPDATE ... RETURNING (and the attempt's upsert) in the
        writer's transaction. ValueError for a `changes` key not in MUTABLE_FIELDS."""
        changes = check_changes(changes)
        states = state_values(expected)
        # Column names come from MUTABLE_FIELDS only (checked above), so formatting is safe.
        assignments = ", ".join(["state = ?", *(f"{key} = ?" for key in changes)])
        sql = f"UPDATE jobs SET {assignments} WHERE id = ? AND state IN ({marks(len(states))})"
        if RETURNING:  # the updated row in the same statement: no second SELECT per write
            sql += f" RETURNING {', '.join(JOB_FIELDS)}"
        params = [JobState(target).value, *changes.values(), job_id, *states]

        recorded = attempt_params(attempt) if attempt is not None else None

        def op(conn: _Conn) -> Job:
            if states and RETURNING and (rows := conn.execute(sql, params).fetchall()):
                if recorded is not None:
                    conn.execute(_UPSERT_ATTEMPT, recorded)
                return row_to_job(rows[0], spec)
            if states and not RETURNING and conn.execute(sql, params).rowcount == 1:
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
        sql = f"INSERT INTO tokens ({', '.join(TOKEN_FIELDS)}) VALUES ({marks(len(params))})"

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
        sql = f"INSERT INTO audit ({columns}) VALUES ({marks(len(rows[0]))})"

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
        limit = page_limit(limit)
        filters: list[tuple[str, tuple[Any, ...]]] = []
        if action:
            value, prefix = audit_action_filter(action)
            # substr, not LIKE: an action may contain '_' or '%'.
            if prefix:
                filters.append(("substr(action, 1, ?) = ?", (len(value), value)))
            else:
                filters.append(("action = ?", (value,)))
        if target:
            filters.append(("target = ?", (target,)))
        sql, params = page_query(_SELECT_AUDIT, filters, cursor, limit)

        def op(conn: _Conn) -> tuple[list[AuditEntry], int | None]:
            return newest_page(conn.execute(sql, params).fetchall(), limit, row_to_audit)

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
                sql = f"SELECT name, ciphertext FROM secrets WHERE name IN ({marks(len(chunk))})"
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
