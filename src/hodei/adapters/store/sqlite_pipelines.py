"""The PipelineStore part of the SQLite store: pipeline runs and their step rows.

Every call is one operation of the store's writer thread (sqlite_writer), so it runs in one
transaction, group-committed with its neighbours before its await returns. A compare-and-swap
that does not apply changed nothing: its ConflictError is returned from the operation rather
than raised in it, so the batch need not be run again with savepoints.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from hodei.adapters.store.common import newest_page, page_limit
from hodei.adapters.store.pipeline_rows import (
    ACTIVE_SQL,
    CACHE_SOURCE_SQL,
    RUN_FIELDS,
    RUN_INSERT_FIELDS,
    STEP_COLUMNS,
    check_steps,
    row_to_run,
    row_to_step,
    run_changes,
    run_not_found,
    run_params,
    status_values,
    step_changes,
    step_conflict,
    step_params,
    stored_run,
    version_conflict,
)
from hodei.adapters.store.sqlite_common import RETURNING, marks, page_query
from hodei.adapters.store.sqlite_writer import SqliteWriter
from hodei.domain.pipelines.runs import PipelineRun, RunState, RunStep, StepUpdate
from hodei.errors import ConflictError, NotFoundError, StoreError

__all__ = ["SqlitePipelines"]

_Conn = sqlite3.Connection
_Row = Sequence[Any]

_RUN_LIST, _STEP_LIST = ", ".join(RUN_FIELDS), ", ".join(STEP_COLUMNS)
_SELECT_RUN = f"SELECT {_RUN_LIST} FROM pipeline_runs"
_SELECT_STEP = f"SELECT {_STEP_LIST} FROM pipeline_steps"
_INSERT_RUN = (
    f"INSERT INTO pipeline_runs ({', '.join(RUN_INSERT_FIELDS)}) "
    f"VALUES ({marks(len(RUN_INSERT_FIELDS))})"
)
_INSERT_STEP = f"INSERT INTO pipeline_steps ({_STEP_LIST}) VALUES ({marks(len(STEP_COLUMNS))})"
_RUN_BY_ID = f"{_SELECT_RUN} WHERE id = ?"
_STEP_BY_ID = f"{_SELECT_STEP} WHERE run_id = ? AND step_id = ?"
_STEP_STATUS = "SELECT status, generation FROM pipeline_steps WHERE run_id = ? AND step_id = ?"
_ACTIVE = f"{_SELECT_RUN} WHERE {ACTIVE_SQL} ORDER BY seq"
# NULL sorts last in DESC here; the order is that of the pipeline_steps_cache index.
_CACHED = (
    f"{_SELECT_STEP} WHERE cache_key = ? AND {CACHE_SOURCE_SQL} "
    "ORDER BY finished_at DESC, run_id DESC, step_id DESC LIMIT 1"
)


def _updated(
    conn: _Conn, sql: str, params: Sequence[Any], columns: str, select: str, key: Sequence[Any]
) -> _Row | None:
    """The row the compare-and-swap UPDATE `sql` changed, or None when its condition did not
    hold; `select` with `key` reads the row where SQLite has no RETURNING."""
    if RETURNING:
        rows = conn.execute(f"{sql} RETURNING {columns}", params).fetchall()
        return rows[0] if rows else None
    if conn.execute(sql, params).rowcount != 1:
        return None
    row: _Row | None = conn.execute(select, key).fetchone()
    return row


def _assignments(columns: Mapping[str, Any], extra: Sequence[str] = ()) -> str:
    # Column names come from the checked changes (pipeline_rows), so formatting is safe.
    return ", ".join([*(f"{name} = ?" for name in columns), *extra])


def _run_of(row: _Row | None) -> PipelineRun | None:
    return row_to_run(row) if row is not None else None


class SqlitePipelines:
    """PipelineStore on the store's writer thread (a part of SqliteJobStore)."""

    _writer: SqliteWriter

    async def create_run(self, run: PipelineRun, steps: Sequence[RunStep]) -> PipelineRun:
        """Insert a run and all its steps in one transaction; returns the run with `seq` set.
        ConflictError if the id exists; ValueError for steps that are not the run's."""
        check_steps(run, steps)
        run_row = run_params(run)
        step_rows = [step_params(step) for step in steps]
        stored = stored_run(run)

        def op(conn: _Conn) -> PipelineRun | ConflictError:
            try:
                cursor = conn.execute(_INSERT_RUN, run_row)
            except sqlite3.IntegrityError as exc:
                if conn.execute("SELECT 1 FROM pipeline_runs WHERE id = ?", (run.id,)).fetchone():
                    return ConflictError(f"run {run.id} already exists")  # nothing was written
                raise StoreError(f"refused run {run.id}: {exc}") from None
            try:
                conn.executemany(_INSERT_STEP, step_rows)
            except sqlite3.IntegrityError as exc:  # raised: the run row must be undone too
                raise StoreError(f"refused the steps of run {run.id}: {exc}") from None
            return stored.with_changes(seq=cursor.lastrowid)

        result = await self._writer.submit(op, write=True)
        if isinstance(result, ConflictError):
            raise result
        return result

    async def get_run(self, run_id: str) -> PipelineRun:
        """NotFoundError if there is no such run."""

        def op(conn: _Conn) -> PipelineRun | None:
            return _run_of(conn.execute(_RUN_BY_ID, (run_id,)).fetchone())

        run = await self._writer.submit(op, write=False)
        if run is None:
            raise run_not_found(run_id)
        return run

    async def list_runs(
        self, state: RunState | None = None, limit: int = 100, cursor: int | None = None
    ) -> tuple[list[PipelineRun], int | None]:
        """Newest first. `cursor` is the `seq` below which to continue; returns (items, next)."""
        limit = page_limit(limit)
        filters = [("state = ?", (RunState(state).value,))] if state is not None else []
        sql, params = page_query(_SELECT_RUN, filters, cursor, limit)

        def op(conn: _Conn) -> tuple[list[PipelineRun], int | None]:
            return newest_page(conn.execute(sql, params).fetchall(), limit, row_to_run)

        return await self._writer.submit(op, write=False)

    async def active_runs(self) -> list[PipelineRun]:
        """Runs that are running or waiting, oldest first."""
        return await self._writer.submit(
            lambda conn: [row_to_run(row) for row in conn.execute(_ACTIVE)], write=False
        )

    async def update_run(
        self, run_id: str, version: int, changes: Mapping[str, Any]
    ) -> PipelineRun:
        """PipelineStore.update_run. ValueError for a field `changes` may not set."""
        columns = run_changes(changes)
        sets = _assignments(columns, ["version = version + 1"])
        sql = f"UPDATE pipeline_runs SET {sets} WHERE id = ? AND version = ?"
        params = [*columns.values(), run_id, int(version)]

        def op(conn: _Conn) -> PipelineRun | ConflictError | NotFoundError:
            row = _updated(conn, sql, params, _RUN_LIST, _RUN_BY_ID, (run_id,))
            if row is not None:
                return row_to_run(row)
            found = conn.execute("SELECT version FROM pipeline_runs WHERE id = ?", (run_id,))
            stored = found.fetchone()
            if stored is None:
                return run_not_found(run_id)
            return version_conflict(run_id, stored[0], version)

        result = await self._writer.submit(op, write=True)
        if isinstance(result, ConflictError | NotFoundError):
            raise result
        return result

    async def run_steps(self, run_id: str) -> list[RunStep]:
        """The run's step rows by index (empty for an unknown run)."""
        sql = f"{_SELECT_STEP} WHERE run_id = ? ORDER BY idx"
        return await self._writer.submit(
            lambda conn: [row_to_step(row) for row in conn.execute(sql, (run_id,))], write=False
        )

    async def update_steps(
        self, run_id: str, updates: Sequence[StepUpdate]
    ) -> list[RunStep | ConflictError]:
        """PipelineStore.update_steps. ValueError for a field an update's `changes` may not
        set (then nothing is applied)."""
        statements: list[tuple[StepUpdate, str, list[Any]]] = []
        for update in updates:
            columns = step_changes(update.changes)
            statuses = status_values(update.expected)
            # No change at all is still a compare-and-swap: "status = status" sets nothing.
            sets = _assignments(columns) or "status = status"
            sql = (
                f"UPDATE pipeline_steps SET {sets} WHERE run_id = ? AND step_id = ? "
                f"AND generation = ? AND status IN ({marks(len(statuses))})"
            )
            params = [*columns.values(), run_id, update.step_id, update.generation, *statuses]
            statements.append((update, sql if statuses else "", params))

        def op(conn: _Conn) -> list[RunStep | ConflictError]:
            out: list[RunStep | ConflictError] = []
            for update, sql, params in statements:
                key = (run_id, update.step_id)
                row = _updated(conn, sql, params, _STEP_LIST, _STEP_BY_ID, key) if sql else None
                if row is not None:
                    out.append(row_to_step(row))
                    continue
                found = conn.execute(_STEP_STATUS, key).fetchone()
                out.append(step_conflict(run_id, update, (found[0], found[1]) if found else None))
            return out

        return await self._writer.submit(op, write=True) if statements else []

    async def cached_step(self, cache_key: str) -> RunStep | None:
        """The most recently finished succeeded step with this cache key that ran itself."""

        def op(conn: _Conn) -> RunStep | None:
            row = conn.execute(_CACHED, (cache_key,)).fetchone()
            return row_to_step(row) if row is not None else None

        return await self._writer.submit(op, write=False)
