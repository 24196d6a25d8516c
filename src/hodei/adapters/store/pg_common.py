"""What the PostgreSQL store's modules share (jobs in postgres, pipelines in pg_pipelines):
which errors are the database's and which may be retried, paging SQL, unnest columns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

_T = TypeVar("_T")
Fn = Callable[[asyncpg.Connection], Awaitable[_T]]

# Errors of the database or the way to it, as opposed to Hodei's own (Conflict, NotFound): the
# three roots of asyncpg's exceptions (a connection lost mid-statement can surface as any of
# them), then the socket's.
DB_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
# May run again, whatever the statement: asyncpg raised before sending it (a pooled connection
# the server closed while it sat idle), or PostgreSQL rolled it back whole (deadlock between
# batches of two servers, serialization failure).
UNDONE = (
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)
# The connection died mid-statement: a write may have committed, only a read may run again.
LOST = (asyncpg.PostgresConnectionError, asyncpg.OperatorInterventionError, OSError)
# The database refused a row's data (not itself broken): the row is at fault, not the batch.
REFUSED = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


def page_query(
    select: str, filters: Sequence[tuple[str, Sequence[Any]]], cursor: int | None, limit: int
) -> tuple[str, list[Any]]:
    """The SQL and parameters of a newest-first page of `select` (list_jobs, list_audit, list_runs):
    rows meeting every filter (a condition whose {} marks, or {0} for a value used twice,
    become its values' numbered parameters), below `cursor` if given, one row beyond `limit`
    (see newest_page)."""
    if cursor is not None:
        filters = [*filters, ("seq < {}", (int(cursor),))]
    conditions: list[str] = []
    params: list[Any] = []
    for condition, values in filters:
        conditions.append(
            condition.format(*(f"${len(params) + i}" for i in range(1, len(values) + 1)))
        )
        params.extend(values)
    clause = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    params.append(limit + 1)
    return f"{select}{clause} ORDER BY seq DESC LIMIT ${len(params)}", params


def retryable(exc: BaseException, read: bool) -> bool:
    return isinstance(exc, UNDONE) or (read and isinstance(exc, LOST))


async def keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset: none. The store changes no session state (no SET, LISTEN or session lock),
    and the default reset query would cost a round trip per operation. asyncpg still rolls
    back a transaction left open."""


def unnest_columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows to the per-column arrays `unnest(...)` takes."""
    return [list(column) for column in zip(*rows, strict=True)]
