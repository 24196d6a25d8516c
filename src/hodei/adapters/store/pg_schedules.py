"""The ScheduleStore and TemplateStore parts of the PostgreSQL store.

Each call is one transaction on a pooled connection (the store's `_run`). Compare-and-swaps
are `UPDATE ... WHERE version = $n RETURNING`: servers sharing the database queue on the row
lock and PostgreSQL re-checks the condition once the lock is theirs, so of servers claiming
the same fire exactly one commits it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg

from hodei.adapters.store.pg_common import Fn
from hodei.adapters.store.schedule_rows import (
    ACTIVE_FIRE_SQL,
    FIRE_FIELDS,
    MAX_SCHEDULES,
    SCHEDULE_FIELDS,
    TEMPLATE_FIELDS,
    fire_changes,
    fire_conflict,
    fire_params,
    outcome_values,
    row_to_fire,
    row_to_schedule,
    row_to_template,
    schedule_changes,
    schedule_not_found,
    schedule_params,
    template_not_found,
    template_params,
    version_conflict,
)
from hodei.domain.schedules.model import Fire, FireOutcome, Schedule
from hodei.domain.templates import TemplateRecord
from hodei.errors import ConflictError, NotFoundError

__all__ = ["PostgresSchedules"]

_T = TypeVar("_T")


def _marks(n: int, start: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(start, start + n))


_S_LIST, _F_LIST, _T_LIST = (
    ", ".join(SCHEDULE_FIELDS),
    ", ".join(FIRE_FIELDS),
    ", ".join(TEMPLATE_FIELDS),
)
_INSERT_S = (
    f"INSERT INTO schedules ({_S_LIST}) VALUES ({_marks(len(SCHEDULE_FIELDS))}) "
    "ON CONFLICT DO NOTHING RETURNING id"
)
_INSERT_F = (
    f"INSERT INTO schedule_fires ({_F_LIST}) VALUES ({_marks(len(FIRE_FIELDS))}) "
    "ON CONFLICT (id) DO NOTHING RETURNING id"
)
_INSERT_T = (
    f"INSERT INTO templates ({_T_LIST}) VALUES ({_marks(len(TEMPLATE_FIELDS))}) "
    "ON CONFLICT DO NOTHING RETURNING name"
)
_SELECT_S = f"SELECT {_S_LIST} FROM schedules"
_SELECT_F = f"SELECT {_F_LIST} FROM schedule_fires"
_SELECT_T = f"SELECT {_T_LIST} FROM templates"
_BY_NAME = 'ORDER BY name COLLATE "C"'  # code point order, as SQLite and the memory store


def _update_sql(columns: Mapping[str, Any]) -> str:
    n = len(columns)
    sets = ", ".join(
        [*(f"{name} = ${i}" for i, name in enumerate(columns, 1)), "version = version + 1"]
    )
    return (
        f"UPDATE schedules SET {sets} WHERE id = ${n + 1} AND version = ${n + 2} "
        f"RETURNING {_S_LIST}"
    )


async def _update(
    conn: asyncpg.Connection, schedule_id: str, version: int, columns: Mapping[str, Any]
) -> Schedule | ConflictError | NotFoundError:
    row = await conn.fetchrow(_update_sql(columns), *columns.values(), schedule_id, int(version))
    if row is not None:
        return row_to_schedule(row)
    stored = await conn.fetchval("SELECT version FROM schedules WHERE id = $1", schedule_id)
    if stored is None:
        return schedule_not_found(schedule_id)
    return version_conflict(schedule_id, stored, version)


class PostgresSchedules:
    """ScheduleStore and TemplateStore on the store's pool (parts of PostgresJobStore)."""

    async def _run(self, fn: Fn[_T], *, read: bool = False) -> _T:
        raise NotImplementedError  # PostgresJobStore's

    async def create_schedule(self, schedule: Schedule) -> Schedule:
        row = schedule_params(schedule)
        created = await self._run(lambda c: c.fetchval(_INSERT_S, *row))
        if created is None:
            raise ConflictError(f"a schedule named {schedule.name} already exists")
        return row_to_schedule(row)

    async def get_schedule(self, name: str) -> Schedule:
        sql = f"{_SELECT_S} WHERE name = $1"
        row = await self._run(lambda c: c.fetchrow(sql, name), read=True)
        if row is None:
            raise schedule_not_found(name)
        return row_to_schedule(row)

    async def list_schedules(self) -> list[Schedule]:
        sql = f"{_SELECT_S} {_BY_NAME} LIMIT {MAX_SCHEDULES}"
        rows = await self._run(lambda c: c.fetch(sql), read=True)
        return [row_to_schedule(r) for r in rows]

    async def update_schedule(
        self, schedule_id: str, version: int, changes: Mapping[str, Any]
    ) -> Schedule:
        columns = schedule_changes(changes)
        result = await self._run(lambda c: _update(c, schedule_id, version, columns))
        if isinstance(result, ConflictError | NotFoundError):
            raise result
        return result

    async def claim_fires(
        self, schedule_id: str, version: int, changes: Mapping[str, Any], fires: Sequence[Fire]
    ) -> Schedule:
        columns = schedule_changes(changes)
        rows = [fire_params(f) for f in fires]

        async def op(conn: asyncpg.Connection) -> Schedule | ConflictError | NotFoundError:
            async with conn.transaction():
                updated = await _update(conn, schedule_id, version, columns)
                if isinstance(updated, ConflictError | NotFoundError):
                    return updated
                for fire, row in zip(fires, rows, strict=True):
                    if await conn.fetchval(_INSERT_F, *row) is None:
                        # Raised in the transaction: the schedule's update is undone with it.
                        raise ConflictError(f"fire {fire.id} exists already")
                return updated

        result = await self._run(op)
        if isinstance(result, ConflictError | NotFoundError):
            raise result
        return result

    async def delete_schedule(self, schedule_id: str) -> None:
        async def op(conn: asyncpg.Connection) -> str:
            async with conn.transaction():
                status: str = await conn.execute("DELETE FROM schedules WHERE id = $1", schedule_id)
                await conn.execute("DELETE FROM schedule_fires WHERE schedule_id = $1", schedule_id)
                return status

        if await self._run(op) != "DELETE 1":
            raise schedule_not_found(schedule_id)

    async def list_fires(
        self, schedule_id: str, limit: int = 50, before: float | None = None
    ) -> list[Fire]:
        limit = max(1, min(int(limit), 1000))
        params: list[Any] = [schedule_id]
        below = ""
        if before is not None:
            below, params = " AND scheduled_at < $2", [schedule_id, float(before)]
        sql = (
            f"{_SELECT_F} WHERE schedule_id = $1{below} "
            f'ORDER BY scheduled_at DESC, id COLLATE "C" DESC LIMIT {limit}'
        )
        rows = await self._run(lambda c: c.fetch(sql, *params), read=True)
        return [row_to_fire(r) for r in rows]

    async def active_fires(self) -> list[Fire]:
        sql = f'{_SELECT_F} WHERE {ACTIVE_FIRE_SQL} ORDER BY scheduled_at, id COLLATE "C"'
        rows = await self._run(lambda c: c.fetch(sql), read=True)
        return [row_to_fire(r) for r in rows]

    async def update_fire(
        self,
        fire_id: str,
        outcomes: Collection[FireOutcome],
        changes: Mapping[str, Any],
        *,
        unsettled: bool = False,
    ) -> Fire:
        columns = fire_changes(changes)
        wanted = outcome_values(outcomes)
        n = len(columns)
        sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(columns, 1))
        sql = (
            f"UPDATE schedule_fires SET {sets or 'outcome = outcome'} WHERE id = ${n + 1} "
            f"AND outcome = ANY(${n + 2}::text[])"
            + (" AND result = ''" if unsettled else "")
            + f" RETURNING {_F_LIST}"
        )

        async def op(conn: asyncpg.Connection) -> Fire | ConflictError | NotFoundError:
            row = await conn.fetchrow(sql, *columns.values(), fire_id, wanted)
            if row is not None:
                return row_to_fire(row)
            found = await conn.fetchrow(
                "SELECT outcome, result FROM schedule_fires WHERE id = $1", fire_id
            )
            return fire_conflict(fire_id, (found[0], found[1]) if found else None)

        result = await self._run(op)
        if isinstance(result, ConflictError | NotFoundError):
            raise result
        return result

    # -- templates

    async def add_template(self, record: TemplateRecord) -> TemplateRecord:
        row = template_params(record)
        if await self._run(lambda c: c.fetchval(_INSERT_T, *row)) is None:
            raise ConflictError(f"template {record.name} has a version {record.version}")
        return row_to_template(row)

    async def get_template(self, name: str, version: int | None = None) -> TemplateRecord:
        if version is None:
            sql = f"{_SELECT_T} WHERE name = $1 ORDER BY version DESC LIMIT 1"
            params: list[Any] = [name]
        else:
            sql, params = f"{_SELECT_T} WHERE name = $1 AND version = $2", [name, int(version)]
        row = await self._run(lambda c: c.fetchrow(sql, *params), read=True)
        if row is None:
            raise template_not_found(name, version)
        return row_to_template(row)

    async def list_templates(self) -> list[TemplateRecord]:
        sql = (
            f"{_SELECT_T} AS t WHERE version = "
            "(SELECT max(version) FROM templates WHERE name = t.name) "
            f'ORDER BY name COLLATE "C" LIMIT {MAX_SCHEDULES}'
        )
        rows = await self._run(lambda c: c.fetch(sql), read=True)
        return [row_to_template(r) for r in rows]

    async def template_versions(self, name: str) -> list[TemplateRecord]:
        sql = f"{_SELECT_T} WHERE name = $1 ORDER BY version DESC LIMIT 1000"
        rows = await self._run(lambda c: c.fetch(sql, name), read=True)
        return [row_to_template(r) for r in rows]

    async def delete_template(self, name: str) -> None:
        status = await self._run(lambda c: c.execute("DELETE FROM templates WHERE name = $1", name))
        if status == "DELETE 0":
            raise template_not_found(name, None)
