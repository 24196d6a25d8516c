"""The PipelineStore part of the PostgreSQL store: pipeline runs and their step rows.

Each call is one transaction on a pooled connection (the store's `_run`: database errors
become StoreError, a deadlock is run again whole). Compare-and-swaps are `UPDATE ... WHERE
<expected> RETURNING`: writers of one row queue on its row lock and PostgreSQL re-checks the
condition once the lock is theirs, so of servers deciding the same change exactly one applies it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import asyncpg

from hodei.adapters.store.common import newest_page, page_limit
from hodei.adapters.store.pg_common import Fn, page_query, unnest_columns
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
from hodei.domain.pipelines.runs import PipelineRun, RunState, RunStep, StepUpdate
from hodei.errors import ConflictError

__all__ = ["PostgresPipelines"]

_T = TypeVar("_T")

_STEP_TYPES = {
    "run_id": "text",
    "step_id": "text",
    "idx": "int4",
    "step": "text",
    "status": "text",
    "generation": "int4",
    "job_id": "text",
    "attempt": "int4",
    "reason": "text",
    "outputs": "text",
    "cache_key": "text",
    "cached_from": "text",
    "artifact_sha256": "text",
    "artifact_bytes": "int8",
    "started_at": "float8",
    "finished_at": "float8",
}
_RUN_LIST, _STEP_LIST = ", ".join(RUN_FIELDS), ", ".join(STEP_COLUMNS)
_SELECT_RUN = f"SELECT {_RUN_LIST} FROM pipeline_runs"
_SELECT_STEP = f"SELECT {_STEP_LIST} FROM pipeline_steps"
_INSERT_RUN = (
    f"INSERT INTO pipeline_runs ({', '.join(RUN_INSERT_FIELDS)}) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(RUN_INSERT_FIELDS) + 1))}) "
    "ON CONFLICT (id) DO NOTHING RETURNING seq"
)
# Every step in one statement, whatever their number (a step column without a type fails here).
_INSERT_STEPS = (
    f"INSERT INTO pipeline_steps ({_STEP_LIST}) SELECT * FROM unnest("
    + ", ".join(f"${i}::{_STEP_TYPES[c]}[]" for i, c in enumerate(STEP_COLUMNS, 1))
    + ")"
)
_ACTIVE = f"{_SELECT_RUN} WHERE {ACTIVE_SQL} ORDER BY seq"
# The order of the pipeline_steps_cache index (NULLS LAST as in SQLite, ids in code point order).
_CACHED = (
    f"{_SELECT_STEP} WHERE cache_key = $1 AND {CACHE_SOURCE_SQL} ORDER BY "
    'finished_at DESC NULLS LAST, run_id COLLATE "C" DESC, step_id COLLATE "C" DESC LIMIT 1'
)
_STEP_STATUS = "SELECT status, generation FROM pipeline_steps WHERE run_id = $1 AND step_id = $2"


def _assignments(names: Sequence[str], extra: Sequence[str] = ()) -> str:
    # Column names come from the checked changes (pipeline_rows), so formatting is safe.
    return ", ".join([*(f"{name} = ${i}" for i, name in enumerate(names, 1)), *extra])


class PostgresPipelines:
    """PipelineStore on the store's connection pool (a part of PostgresJobStore)."""

    async def _run(self, fn: Fn[_T], *, read: bool = False) -> _T:
        raise NotImplementedError  # PostgresJobStore's

    async def create_run(self, run: PipelineRun, steps: Sequence[RunStep]) -> PipelineRun:
        """Insert a run and all its steps in one transaction; returns the run with `seq` set.
        ConflictError if the id exists; ValueError for steps that are not the run's."""
        check_steps(run, steps)
        run_row = run_params(run)
        step_arrays = unnest_columns([step_params(step) for step in steps])

        async def op(conn: asyncpg.Connection) -> int | None:
            async with conn.transaction():
                seq: int | None = await conn.fetchval(_INSERT_RUN, *run_row)
                if seq is not None and step_arrays:
                    await conn.execute(_INSERT_STEPS, *step_arrays)
                return seq

        seq = await self._run(op)
        if seq is None:
            raise ConflictError(f"run {run.id} already exists")
        return stored_run(run).with_changes(seq=seq)

    async def get_run(self, run_id: str) -> PipelineRun:
        """NotFoundError if there is no such run."""
        sql = f"{_SELECT_RUN} WHERE id = $1"
        row = await self._run(lambda c: c.fetchrow(sql, run_id), read=True)
        if row is None:
            raise run_not_found(run_id)
        return row_to_run(row)

    async def list_runs(
        self, state: RunState | None = None, limit: int = 100, cursor: int | None = None
    ) -> tuple[list[PipelineRun], int | None]:
        """Newest first. `cursor` is the `seq` below which to continue; returns (items, next)."""
        limit = page_limit(limit)
        filters = [("state = {}", (RunState(state).value,))] if state is not None else []
        sql, params = page_query(_SELECT_RUN, filters, cursor, limit)
        rows = await self._run(lambda c: c.fetch(sql, *params), read=True)
        return newest_page(rows, limit, row_to_run)

    async def active_runs(self) -> list[PipelineRun]:
        """Runs that are running or waiting, oldest first."""
        rows = await self._run(lambda c: c.fetch(_ACTIVE), read=True)
        return [row_to_run(row) for row in rows]

    async def update_run(
        self, run_id: str, version: int, changes: Mapping[str, Any]
    ) -> PipelineRun:
        """PipelineStore.update_run. ValueError for a field `changes` may not set."""
        columns = run_changes(changes)
        n = len(columns)
        sql = (
            f"UPDATE pipeline_runs SET {_assignments(list(columns), ['version = version + 1'])} "
            f"WHERE id = ${n + 1} AND version = ${n + 2} RETURNING {_RUN_LIST}"
        )
        params = [*columns.values(), run_id, int(version)]

        async def op(conn: asyncpg.Connection) -> tuple[asyncpg.Record | None, int | None]:
            row = await conn.fetchrow(sql, *params)
            if row is not None:
                return row, None
            stored = await conn.fetchval("SELECT version FROM pipeline_runs WHERE id = $1", run_id)
            return None, stored

        row, stored = await self._run(op)
        if row is not None:
            return row_to_run(row)
        if stored is None:
            raise run_not_found(run_id)
        raise version_conflict(run_id, stored, version)

    async def run_steps(self, run_id: str) -> list[RunStep]:
        """The run's step rows by index (empty for an unknown run)."""
        sql = f"{_SELECT_STEP} WHERE run_id = $1 ORDER BY idx"
        rows = await self._run(lambda c: c.fetch(sql, run_id), read=True)
        return [row_to_step(row) for row in rows]

    async def update_steps(
        self, run_id: str, updates: Sequence[StepUpdate]
    ) -> list[RunStep | ConflictError]:
        """PipelineStore.update_steps. ValueError for a field an update's `changes` may not
        set (then nothing is applied)."""
        statements: list[tuple[StepUpdate, str, list[Any]]] = []
        for update in updates:
            columns = step_changes(update.changes)
            statuses = status_values(update.expected)
            n = len(columns)
            # No change at all is still a compare-and-swap: "status = status" sets nothing.
            sets = _assignments(list(columns)) or "status = status"
            sql = (
                f"UPDATE pipeline_steps SET {sets} WHERE run_id = ${n + 1} AND step_id = ${n + 2} "
                f"AND generation = ${n + 3} AND status = ANY(${n + 4}::text[]) "
                f"RETURNING {_STEP_LIST}"
            )
            params = [*columns.values(), run_id, update.step_id, update.generation, statuses]
            statements.append((update, sql, params))
        if not statements:
            return []

        async def op(conn: asyncpg.Connection) -> list[RunStep | ConflictError]:
            out: list[RunStep | ConflictError] = []  # built anew if a deadlock runs this again
            async with conn.transaction():
                for update, sql, params in statements:
                    row = await conn.fetchrow(sql, *params)
                    if row is not None:
                        out.append(row_to_step(row))
                        continue
                    found = await conn.fetchrow(_STEP_STATUS, run_id, update.step_id)
                    stored = (found["status"], found["generation"]) if found else None
                    out.append(step_conflict(run_id, update, stored))
            return out

        return await self._run(op)

    async def cached_step(self, cache_key: str) -> RunStep | None:
        """The most recently finished succeeded step with this cache key that ran itself."""
        row = await self._run(lambda c: c.fetchrow(_CACHED, cache_key), read=True)
        return row_to_step(row) if row is not None else None
