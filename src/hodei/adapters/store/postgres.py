"""PostgreSQL JobStore on an asyncpg connection pool; several servers may share one database.

Every write commits before its await returns. Transitions are compare-and-swap (`UPDATE ...
WHERE state = ANY(expected)`): concurrent writers of one row queue on its row lock and
PostgreSQL re-checks the condition once the lock is theirs, so exactly one wins. Creates and
transitions that arrive together are group-committed (pg_batch): one statement over
`unnest(...)` arrays per batch. The schema is versioned (pg_schema) and migrated on open under
an advisory lock. asyncpg and socket errors become StoreError here; callers never see them.
Pipeline runs and their steps are pg_pipelines'.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg

from hodei.adapters.store.common import (
    ATTEMPT_FIELDS,
    AUDIT_FIELDS,
    AUDIT_INSERT_FIELDS,
    INSERT_FIELDS,
    TOKEN_FIELDS,
    Migration,
    attempt_params,
    audit_action_filter,
    audit_params,
    check_changes,
    job_params,
    newest_page,
    page_limit,
    pending_migrations,
    redact_url,
    row_to_attempt,
    row_to_audit,
    row_to_job,
    row_to_token,
    state_values,
    token_params,
    transition_conflict,
)
from hodei.adapters.store.pg_batch import GroupCommit, Pending, fail_batch
from hodei.adapters.store.pg_common import (
    DB_ERRORS,
    REFUSED,
    Fn,
    keep_session,
    page_query,
    retryable,
)
from hodei.adapters.store.pg_pipelines import PostgresPipelines
from hodei.adapters.store.pg_schedules import PostgresSchedules
from hodei.adapters.store.pg_schema import (
    KEY_OWNERS,
    MIGRATION_LOCK,
    MIGRATIONS,
    MIGRATIONS_TABLE,
    SCHEMA_VERSION,
    SELECT,
    SELECT_ATTEMPTS,
    STATES_OF,
    insert_statement,
    job_conditions,
    move_statement,
)
from hodei.domain.access import AuditEntry, TokenRecord
from hodei.domain.attempts import Attempt
from hodei.domain.job_filter import job_filter
from hodei.domain.jobs import Job, JobSpec, JobState
from hodei.errors import ConflictError, NotFoundError, StoreError
from hodei.ports import SecretRecord

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "PostgresJobStore"]

_T = TypeVar("_T")

MAX_BATCH = 500
_NO_ATTEMPT = (None,) * len(ATTEMPT_FIELDS)
_KEY_AT = INSERT_FIELDS.index("idempotency_key")  # in a create's parameters
_SELECT_AUDIT = f"SELECT {', '.join(AUDIT_FIELDS)} FROM audit"


class PostgresJobStore(PostgresPipelines, PostgresSchedules):
    """JobStore on a PostgreSQL database. `await open()` before use, `await close()` when done.

    `dsn` is a postgresql:// (or postgres://) URL as libpq reads it; other query parameters are
    server settings, e.g. `?search_path=hodei` to keep the tables in the schema `hodei`.
    """

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        max_batch: int = MAX_BATCH,
        connect_timeout_s: float = 10.0,
        command_timeout_s: float = 60.0,
        migrations: Sequence[Migration] = MIGRATIONS,
        on_commit: Callable[[float], None] | None = None,
    ) -> None:
        """`on_commit(seconds)` hears each group commit's duration."""
        self.dsn = dsn
        self.where = f"job store {redact_url(dsn)}"
        self.migrations = tuple(migrations)
        max_size = max(1, max_size, min_size)
        self._pool_args: dict[str, Any] = {
            "min_size": max(0, min_size),
            "max_size": max_size,
            "timeout": connect_timeout_s,
            "command_timeout": command_timeout_s,
            "reset": keep_session,
        }
        # Enough tries to get past every pooled connection a database restart left dead.
        self._tries = max_size + 1
        self._pool: asyncpg.Pool | None = None
        # Batches in flight stay below the pool size, so single reads always find a connection.
        flying = max(1, max_size // 3)
        self.creates = GroupCommit(
            self._insert_batch, max_batch=max_batch, max_in_flight=flying, on_commit=on_commit
        )
        self.moves = GroupCommit(
            self._move_batch,
            max_batch=max_batch,
            max_in_flight=flying,
            unique=True,
            on_commit=on_commit,
        )
        self._closed = False
        self._busy = 0  # operations under way; close() waits for them
        self._idle = asyncio.Event()
        self._idle.set()

    # -- lifecycle

    async def open(self) -> None:
        """Connect and bring the schema up to date. StoreError if the database cannot be
        reached or is from a newer Hodei."""
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(self.dsn, **self._pool_args)
        except DB_ERRORS as exc:
            raise self._error(exc, "cannot connect") from exc
        except ValueError as exc:  # asyncpg's word for a malformed DSN
            raise StoreError(f"{self.where}: invalid database URL: {exc}") from exc
        try:
            async with pool.acquire() as conn:
                await self._migrate(conn)
        except BaseException as exc:
            pool.terminate()
            if isinstance(exc, DB_ERRORS):
                raise self._error(exc, "cannot migrate the schema") from exc
            raise
        self._pool, self._closed = pool, False

    async def close(self) -> None:
        """Finish every operation under way, then close the connections."""
        self._closed = True
        pool = self._pool
        if pool is None:
            return
        await self._idle.wait()
        self._pool = None
        with contextlib.suppress(*DB_ERRORS):
            await asyncio.wait_for(pool.close(), 10)
            return
        pool.terminate()  # the connections did not close in time: drop them

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        # One transaction under a lock every Hodei server takes first: servers starting together
        # apply each step once, and a failing step leaves the database at its old version.
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(MIGRATIONS_TABLE)
            current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
            for version, step in pending_migrations(current, self.migrations, self.where):
                for statement in step.statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, description) VALUES ($1, $2)",
                    version,
                    step.description,
                )

    def _error(self, exc: BaseException, doing: str = "failed") -> StoreError:
        if isinstance(exc, asyncpg.PostgresError):
            detail = f"{exc} (SQLSTATE {exc.sqlstate})"
        elif isinstance(exc, TimeoutError):
            detail = "timed out waiting for PostgreSQL"
        elif isinstance(exc, OSError):
            detail = f"PostgreSQL is unreachable: {exc.strerror or exc}"
        else:
            detail = f"{type(exc).__name__}: {exc}"
        return StoreError(f"{self.where} {doing}: {detail}")

    # -- running operations

    def _enter(self) -> asyncpg.Pool:
        """Count an operation in (synchronously, so close() waits for it) and return the pool."""
        if self._pool is None or self._closed:
            raise StoreError(f"{self.where} is {'closed' if self._closed else 'not open'}")
        self._busy += 1
        self._idle.clear()
        return self._pool

    def _leave(self) -> None:
        self._busy -= 1
        if self._busy == 0:
            self._idle.set()

    async def _run(self, fn: Fn[_T], *, read: bool = False) -> _T:
        """`fn` on a pooled connection; database errors become StoreError."""
        pool = self._enter()
        try:
            return await self._attempt(pool, fn, read)
        finally:
            self._leave()

    async def _batched(self, queue: GroupCommit, key: str, request: Any) -> Any:
        self._enter()
        try:
            return await queue.submit(key, request)
        finally:
            self._leave()

    async def _attempt(self, pool: asyncpg.Pool, fn: Fn[_T], read: bool) -> _T:
        for tries_left in range(self._tries - 1, -1, -1):
            try:
                async with pool.acquire() as conn:
                    return await fn(conn)
            except DB_ERRORS as exc:
                if not tries_left or not retryable(exc, read):
                    raise self._error(exc) from exc
        raise AssertionError("unreachable")  # the last try returns or raises

    async def _run_batch(
        self,
        batch: list[Pending],
        statement: Callable[[list[Pending]], Fn[_T]],
        settle: Callable[[list[Pending], _T], Awaitable[None]],
    ) -> None:
        """Run one batch's statement and settle its calls. A row the database refuses fails
        alone: the batch is split into single calls. Never raises."""
        assert self._pool is not None  # close() waits for the callers, so the pool is there
        try:
            result = await self._attempt(self._pool, statement(batch), False)
        except StoreError as exc:
            if not isinstance(exc.__cause__, REFUSED):
                fail_batch(batch, exc)
            elif len(batch) == 1:
                fail_batch(batch, self._error(exc.__cause__, f"refused job {batch[0].key}"))
            else:
                for one in batch:
                    await self._run_batch([one], statement, settle)
            return
        try:
            await settle(batch, result)
        except StoreError as exc:
            fail_batch(batch, exc)

    # -- jobs

    async def create_job(self, job: Job) -> Job:
        """Insert a new job; returns it with `seq` set. ConflictError if the id exists, or its
        idempotency key is another job's."""
        seq = await self._batched(self.creates, job.id, job_params(job))
        return job.with_changes(seq=seq)

    async def create_jobs(self, jobs: Sequence[Job]) -> list[Job | ConflictError]:
        # Each joins the group commit of create_job: one transaction for all that are queued.
        results = await asyncio.gather(
            *(self.create_job(job) for job in jobs), return_exceptions=True
        )
        out: list[Job | ConflictError] = []
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, ConflictError):
                raise result
            out.append(result)
        return out

    async def _insert_batch(self, batch: list[Pending]) -> None:
        await self._run_batch(batch, insert_statement, self._settle_inserts)

    async def _settle_inserts(self, batch: list[Pending], rows: list[asyncpg.Record]) -> None:
        """The first call for an id that came back inserted wins; any other call gets a
        ConflictError naming the id or the idempotency key that was taken."""
        seqs = {row["id"]: row["seq"] for row in rows}
        refused = [p for p in batch if p.key not in seqs]
        keys = [p.request[_KEY_AT] for p in refused if p.request[_KEY_AT] is not None]
        owners: dict[str, str] = {}
        if keys:
            assert self._pool is not None  # the batch's callers keep the store open
            found = await self._attempt(self._pool, lambda c: c.fetch(KEY_OWNERS, keys), True)
            owners = {row["idempotency_key"]: row["id"] for row in found}
        for pending in batch:
            seq = seqs.pop(pending.key, None)
            if pending.future.done():  # the caller was cancelled (its job may still be stored)
                continue
            if seq is not None:
                pending.future.set_result(seq)
                continue
            owner = owners.get(pending.request[_KEY_AT])
            if owner is not None and owner != pending.key:
                message = f"idempotency key already used by job {owner}"
            else:
                message = f"job {pending.key} already exists"
            pending.future.set_exception(ConflictError(message))

    async def job_by_idempotency_key(self, key: str) -> Job | None:
        sql = f"{SELECT} WHERE idempotency_key = $1"
        row = await self._run(lambda c: c.fetchrow(sql, key), read=True)
        return row_to_job(row) if row is not None else None

    async def get_job(self, job_id: str) -> Job:
        """NotFoundError if there is no such job."""
        row = await self._run(lambda c: c.fetchrow(f"{SELECT} WHERE id = $1", job_id), read=True)
        if row is None:
            raise NotFoundError(f"no job {job_id}")
        return row_to_job(row)

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
        """JobRecords.list_jobs; the filters' SQL is pg_schema.job_conditions'."""
        wanted = job_filter(state, name, labels, pipeline)
        limit = page_limit(limit)
        sql, params = page_query(SELECT, job_conditions(wanted), cursor, limit)
        rows = await self._run(lambda c: c.fetch(sql, *params), read=True)
        return newest_page(rows, limit, row_to_job)

    async def pending_jobs(self, limit: int | None = None) -> list[Job]:
        """Queued jobs in dispatch order: higher priority first, then oldest first."""
        # The jobs_queue index (state, priority DESC, seq) serves this order.
        sql = f"{SELECT} WHERE state = $1 ORDER BY priority DESC, seq LIMIT $2"
        count = None if limit is None else max(0, int(limit))
        rows = await self._run(lambda c: c.fetch(sql, JobState.QUEUED.value, count), read=True)
        return [row_to_job(row) for row in rows]

    async def jobs_in_states(self, states: Collection[JobState]) -> list[Job]:
        """Every job in one of `states`, oldest first (used at start-up to rebuild queues)."""
        values = state_values(states)
        if not values:
            return []
        sql = f"{SELECT} WHERE state = ANY($1::text[]) ORDER BY seq"
        rows = await self._run(lambda c: c.fetch(sql, values), read=True)
        return [row_to_job(row) for row in rows]

    async def transition(
        self,
        job_id: str,
        expected: Collection[JobState],
        target: JobState,
        changes: Mapping[str, Any] | None = None,
        attempt: Attempt | None = None,
        spec: JobSpec | None = None,
    ) -> Job:
        """JobStore.transition: joins the group commit of moves (one statement for the batch,
        the attempts' upserts included). ValueError for a `changes` key not in MUTABLE_FIELDS."""
        recorded = attempt_params(attempt) if attempt is not None else _NO_ATTEMPT
        request = (
            state_values(expected),
            JobState(target).value,
            check_changes(changes),
            recorded,
            spec,
        )
        job: Job = await self._batched(self.moves, job_id, request)
        return job

    async def _move_batch(self, batch: list[Pending]) -> None:
        await self._run_batch(batch, move_statement, self._settle_moves)

    async def _settle_moves(self, batch: list[Pending], rows: list[asyncpg.Record]) -> None:
        """Resolve each call: its updated job, else why not (from the states now stored). The
        moved ones first: they are committed whatever happens to the read that follows."""
        moved = {row["id"]: row for row in rows}
        missed = [p for p in batch if p.key not in moved]
        for pending in batch:
            if pending.key in moved and not pending.future.done():
                pending.future.set_result(row_to_job(moved[pending.key], pending.request[4]))
        if not missed:
            return
        pool = self._pool
        assert pool is not None  # the batch's callers keep the store open
        ids = [p.key for p in missed]
        states = await self._attempt(pool, lambda c: c.fetch(STATES_OF, ids), True)
        found = {row["id"]: row["state"] for row in states}
        for pending in missed:
            if pending.future.done():  # the caller was cancelled
                continue
            if pending.key in found:
                error = transition_conflict(pending.key, found[pending.key], pending.request[0])
                pending.future.set_exception(error)
            else:
                pending.future.set_exception(NotFoundError(f"no job {pending.key}"))

    async def list_attempts(self, job_id: str) -> list[Attempt]:
        rows = await self._run(lambda c: c.fetch(SELECT_ATTEMPTS, job_id), read=True)
        return [row_to_attempt(row) for row in rows]

    # -- API tokens and the audit trail

    async def create_token(self, token: TokenRecord) -> None:
        params = token_params(token)
        marks = ", ".join(f"${i}" for i in range(1, len(params) + 1))
        sql = (
            f"INSERT INTO tokens ({', '.join(TOKEN_FIELDS)}) VALUES ({marks}) "
            "ON CONFLICT (id) DO NOTHING RETURNING id"
        )
        if await self._run(lambda c: c.fetchval(sql, *params)) is None:
            raise ConflictError(f"token {token.id} already exists")

    async def get_token(self, token_id: str) -> TokenRecord | None:
        sql = f"SELECT {', '.join(TOKEN_FIELDS)} FROM tokens WHERE id = $1"
        row = await self._run(lambda c: c.fetchrow(sql, token_id), read=True)
        return row_to_token(row) if row is not None else None

    async def list_tokens(self) -> list[TokenRecord]:
        sql = f"SELECT {', '.join(TOKEN_FIELDS)} FROM tokens ORDER BY created_at, id"
        rows = await self._run(lambda c: c.fetch(sql), read=True)
        return [row_to_token(row) for row in rows]

    async def revoke_token(self, token_id: str, at: float) -> TokenRecord:
        sql = (
            "UPDATE tokens SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1 "
            f"RETURNING {', '.join(TOKEN_FIELDS)}"
        )
        row = await self._run(lambda c: c.fetchrow(sql, token_id, at))
        if row is None:
            raise NotFoundError(f"no token {token_id}")
        return row_to_token(row)

    async def append_audit(self, *entries: AuditEntry) -> None:
        rows = [audit_params(entry) for entry in entries]
        if not rows:
            return
        marks = ", ".join(f"${i}" for i in range(1, len(rows[0]) + 1))
        sql = f"INSERT INTO audit ({', '.join(AUDIT_INSERT_FIELDS)}) VALUES ({marks})"
        await self._run(lambda c: c.executemany(sql, rows))  # one transaction (asyncpg)

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
            # left(), not LIKE: an action may contain '_' or '%'.
            if prefix:
                filters.append(("left(action, length({0})) = {0}", (value,)))
            else:
                filters.append(("action = {}", (value,)))
        if target:
            filters.append(("target = {}", (target,)))
        sql, params = page_query(_SELECT_AUDIT, filters, cursor, limit)
        rows = await self._run(lambda c: c.fetch(sql, *params), read=True)
        return newest_page(rows, limit, row_to_audit)

    # -- secrets

    async def put_secret(self, name: str, ciphertext: bytes) -> None:
        sql = (
            "INSERT INTO secrets (name, ciphertext, updated_at) "
            "VALUES ($1, $2, extract(epoch FROM clock_timestamp())) "
            "ON CONFLICT (name) DO UPDATE SET "
            "ciphertext = excluded.ciphertext, updated_at = excluded.updated_at"
        )
        value = bytes(ciphertext)
        await self._run(lambda c: c.execute(sql, name, value))

    async def get_secrets(self, names: Collection[str]) -> dict[str, bytes]:
        """Ciphertexts of the named secrets that exist (missing names are simply absent)."""
        wanted = sorted(set(names))
        if not wanted:
            return {}
        sql = "SELECT name, ciphertext FROM secrets WHERE name = ANY($1::text[])"
        rows = await self._run(lambda c: c.fetch(sql, wanted), read=True)
        return {row["name"]: bytes(row["ciphertext"]) for row in rows}

    async def list_secrets(self) -> list[SecretRecord]:
        sql = "SELECT name, updated_at FROM secrets ORDER BY name"
        rows = await self._run(lambda c: c.fetch(sql), read=True)
        return [SecretRecord(name=row["name"], updated_at=row["updated_at"]) for row in rows]

    async def delete_secret(self, name: str) -> None:
        """NotFoundError if there is no such secret."""
        sql = "DELETE FROM secrets WHERE name = $1 RETURNING name"
        deleted = await self._run(lambda c: c.fetchval(sql, name))
        if deleted is None:
            raise NotFoundError(f"no secret {name}")
