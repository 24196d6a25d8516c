"""The ScheduleStore and TemplateStore parts of the SQLite store.

Every call is one operation of the store's writer thread (sqlite_writer): one transaction,
group-committed before its await returns. A compare-and-swap that does not apply returns its
error from the operation (nothing was written); claim_fires raises it inside the operation when
a fire's insert fails after the schedule's update, so the writer undoes that update with it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Mapping, Sequence
from typing import Any

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
from hodei.adapters.store.sqlite_common import marks
from hodei.adapters.store.sqlite_writer import SqliteWriter
from hodei.domain.schedules.model import Fire, FireOutcome, Schedule
from hodei.domain.templates import TemplateRecord
from hodei.errors import ConflictError, NotFoundError

__all__ = ["SqliteSchedules"]

_Conn = sqlite3.Connection
_S_LIST, _F_LIST, _T_LIST = (
    ", ".join(SCHEDULE_FIELDS),
    ", ".join(FIRE_FIELDS),
    ", ".join(TEMPLATE_FIELDS),
)
_INSERT_S = f"INSERT INTO schedules ({_S_LIST}) VALUES ({marks(len(SCHEDULE_FIELDS))})"
_INSERT_F = f"INSERT INTO schedule_fires ({_F_LIST}) VALUES ({marks(len(FIRE_FIELDS))})"
_INSERT_T = f"INSERT INTO templates ({_T_LIST}) VALUES ({marks(len(TEMPLATE_FIELDS))})"
_SELECT_S = f"SELECT {_S_LIST} FROM schedules"
_SELECT_F = f"SELECT {_F_LIST} FROM schedule_fires"
_SELECT_T = f"SELECT {_T_LIST} FROM templates"


def _update_schedule(
    conn: _Conn, schedule_id: str, version: int, columns: Mapping[str, Any]
) -> Schedule | ConflictError | NotFoundError:
    sets = ", ".join([*(f"{name} = ?" for name in columns), "version = version + 1"])
    sql = f"UPDATE schedules SET {sets} WHERE id = ? AND version = ?"
    if conn.execute(sql, [*columns.values(), schedule_id, int(version)]).rowcount == 1:
        return row_to_schedule(conn.execute(f"{_SELECT_S} WHERE id = ?", (schedule_id,)).fetchone())
    stored = conn.execute("SELECT version FROM schedules WHERE id = ?", (schedule_id,)).fetchone()
    if stored is None:
        return schedule_not_found(schedule_id)
    return version_conflict(schedule_id, stored[0], version)


class SqliteSchedules:
    """ScheduleStore and TemplateStore on the store's writer thread (parts of SqliteJobStore)."""

    _writer: SqliteWriter

    async def create_schedule(self, schedule: Schedule) -> Schedule:
        row = schedule_params(schedule)

        def op(conn: _Conn) -> Schedule | ConflictError:
            try:
                conn.execute(_INSERT_S, row)
            except sqlite3.IntegrityError:
                return ConflictError(f"a schedule named {schedule.name} already exists")
            return row_to_schedule(row)

        result = await self._writer.submit(op, write=True)
        if isinstance(result, ConflictError):
            raise result
        return result

    async def get_schedule(self, name: str) -> Schedule:
        def op(conn: _Conn) -> Schedule | None:
            row = conn.execute(f"{_SELECT_S} WHERE name = ?", (name,)).fetchone()
            return row_to_schedule(row) if row is not None else None

        found = await self._writer.submit(op, write=False)
        if found is None:
            raise schedule_not_found(name)
        return found

    async def list_schedules(self) -> list[Schedule]:
        sql = f"{_SELECT_S} ORDER BY name LIMIT {MAX_SCHEDULES}"
        return await self._writer.submit(
            lambda conn: [row_to_schedule(r) for r in conn.execute(sql)], write=False
        )

    async def update_schedule(
        self, schedule_id: str, version: int, changes: Mapping[str, Any]
    ) -> Schedule:
        columns = schedule_changes(changes)
        result = await self._writer.submit(
            lambda conn: _update_schedule(conn, schedule_id, version, columns), write=True
        )
        if isinstance(result, ConflictError | NotFoundError):
            raise result
        return result

    async def claim_fires(
        self, schedule_id: str, version: int, changes: Mapping[str, Any], fires: Sequence[Fire]
    ) -> Schedule:
        columns = schedule_changes(changes)
        rows = [fire_params(f) for f in fires]

        def op(conn: _Conn) -> Schedule | ConflictError | NotFoundError:
            updated = _update_schedule(conn, schedule_id, version, columns)
            if isinstance(updated, ConflictError | NotFoundError):
                return updated
            for fire, row in zip(fires, rows, strict=True):
                try:
                    conn.execute(_INSERT_F, row)
                except sqlite3.IntegrityError:
                    # Raised, not returned: the writer undoes this operation's update with it.
                    raise ConflictError(f"fire {fire.id} exists already") from None
            return updated

        result = await self._writer.submit(op, write=True)
        if isinstance(result, ConflictError | NotFoundError):
            raise result
        return result

    async def delete_schedule(self, schedule_id: str) -> None:
        def op(conn: _Conn) -> bool:
            gone = conn.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,)).rowcount
            conn.execute("DELETE FROM schedule_fires WHERE schedule_id = ?", (schedule_id,))
            return gone == 1

        if not await self._writer.submit(op, write=True):
            raise schedule_not_found(schedule_id)

    async def list_fires(
        self, schedule_id: str, limit: int = 50, before: float | None = None
    ) -> list[Fire]:
        limit = max(1, min(int(limit), 1000))
        params: list[Any] = [schedule_id]
        below = ""
        if before is not None:
            below, params = " AND scheduled_at < ?", [schedule_id, float(before)]
        sql = (
            f"{_SELECT_F} WHERE schedule_id = ?{below} "
            f"ORDER BY scheduled_at DESC, id DESC LIMIT {limit}"
        )
        return await self._writer.submit(
            lambda conn: [row_to_fire(r) for r in conn.execute(sql, params)], write=False
        )

    async def active_fires(self) -> list[Fire]:
        sql = f"{_SELECT_F} WHERE {ACTIVE_FIRE_SQL} ORDER BY scheduled_at, id"
        return await self._writer.submit(
            lambda conn: [row_to_fire(r) for r in conn.execute(sql)], write=False
        )

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
        sets = ", ".join(f"{name} = ?" for name in columns) or "outcome = outcome"
        sql = (
            f"UPDATE schedule_fires SET {sets} WHERE id = ? "
            f"AND outcome IN ({marks(len(wanted))})" + (" AND result = ''" if unsettled else "")
        )
        params = [*columns.values(), fire_id, *wanted]

        def op(conn: _Conn) -> Fire | ConflictError | NotFoundError:
            if wanted and conn.execute(sql, params).rowcount == 1:
                return row_to_fire(conn.execute(f"{_SELECT_F} WHERE id = ?", (fire_id,)).fetchone())
            found = conn.execute(
                "SELECT outcome, result FROM schedule_fires WHERE id = ?", (fire_id,)
            ).fetchone()
            return fire_conflict(fire_id, (found[0], found[1]) if found else None)

        result = await self._writer.submit(op, write=True)
        if isinstance(result, ConflictError | NotFoundError):
            raise result
        return result

    # -- templates

    async def add_template(self, record: TemplateRecord) -> TemplateRecord:
        row = template_params(record)

        def op(conn: _Conn) -> ConflictError | None:
            try:
                conn.execute(_INSERT_T, row)
            except sqlite3.IntegrityError:
                return ConflictError(f"template {record.name} has a version {record.version}")
            return None

        error = await self._writer.submit(op, write=True)
        if error is not None:
            raise error
        return row_to_template(row)

    async def get_template(self, name: str, version: int | None = None) -> TemplateRecord:
        params: list[Any] = [name]
        if version is None:
            sql = f"{_SELECT_T} WHERE name = ? ORDER BY version DESC LIMIT 1"
        else:
            sql, params = f"{_SELECT_T} WHERE name = ? AND version = ?", [name, int(version)]

        def op(conn: _Conn) -> TemplateRecord | None:
            row = conn.execute(sql, params).fetchone()
            return row_to_template(row) if row is not None else None

        found = await self._writer.submit(op, write=False)
        if found is None:
            raise template_not_found(name, version)
        return found

    async def list_templates(self) -> list[TemplateRecord]:
        sql = (
            f"{_SELECT_T} AS t WHERE version = "
            "(SELECT max(version) FROM templates WHERE name = t.name) "
            f"ORDER BY name LIMIT {MAX_SCHEDULES}"
        )
        return await self._writer.submit(
            lambda conn: [row_to_template(r) for r in conn.execute(sql)], write=False
        )

    async def template_versions(self, name: str) -> list[TemplateRecord]:
        sql = f"{_SELECT_T} WHERE name = ? ORDER BY version DESC LIMIT 1000"
        return await self._writer.submit(
            lambda conn: [row_to_template(r) for r in conn.execute(sql, (name,))], write=False
        )

    async def delete_template(self, name: str) -> None:
        def op(conn: _Conn) -> int:
            return int(conn.execute("DELETE FROM templates WHERE name = ?", (name,)).rowcount)

        if not await self._writer.submit(op, write=True):
            raise template_not_found(name, None)
