"""The ScheduleStore and TemplateStore parts of the in-memory store (values kept as the SQL
stores give them back: schedule_rows)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from hodei.adapters.store.schedule_rows import (
    FIRE_MUTABLE,
    MAX_SCHEDULES,
    fire_conflict,
    schedule_changes,
    schedule_not_found,
    stored_fire,
    stored_schedule,
    template_not_found,
    version_conflict,
)
from hodei.domain.schedules.model import Fire, FireOutcome, Schedule
from hodei.domain.templates import TemplateRecord
from hodei.errors import ConflictError

__all__ = ["MemorySchedules"]


class MemorySchedules:
    """A part of MemoryJobStore: `_check()` is the store's (StoreError unless open)."""

    def __init__(self) -> None:
        self._schedules: dict[str, Schedule] = {}  # id -> schedule
        self._fires: dict[str, Fire] = {}  # fire id -> fire
        self._templates: dict[str, dict[int, TemplateRecord]] = {}  # name -> version -> record

    def _check(self) -> None:
        raise NotImplementedError  # MemoryJobStore's

    def _schedule(self, schedule_id: str) -> Schedule:
        found = self._schedules.get(schedule_id)
        if found is None:
            raise schedule_not_found(schedule_id)
        return found

    async def create_schedule(self, schedule: Schedule) -> Schedule:
        self._check()
        if schedule.id in self._schedules or any(
            s.name == schedule.name for s in self._schedules.values()
        ):
            raise ConflictError(f"a schedule named {schedule.name} already exists")
        stored = stored_schedule(schedule)
        self._schedules[schedule.id] = stored
        return stored

    async def get_schedule(self, name: str) -> Schedule:
        self._check()
        for s in self._schedules.values():
            if s.name == name:
                return s
        raise schedule_not_found(name)

    async def list_schedules(self) -> list[Schedule]:
        self._check()
        return sorted(self._schedules.values(), key=lambda s: s.name)[:MAX_SCHEDULES]

    def _updated(self, schedule_id: str, version: int, changes: Mapping[str, Any]) -> Schedule:
        schedule_changes(changes)  # ValueError for a field that may not change
        current = self._schedule(schedule_id)
        if current.version != version:
            raise version_conflict(schedule_id, current.version, version)
        return stored_schedule(current.with_changes(**changes, version=version + 1))

    async def update_schedule(
        self, schedule_id: str, version: int, changes: Mapping[str, Any]
    ) -> Schedule:
        self._check()
        updated = self._updated(schedule_id, version, changes)
        self._schedules[schedule_id] = updated
        return updated

    async def claim_fires(
        self, schedule_id: str, version: int, changes: Mapping[str, Any], fires: Sequence[Fire]
    ) -> Schedule:
        self._check()
        updated = self._updated(schedule_id, version, changes)
        ids = [f.id for f in fires]
        for fire_id in ids:
            if fire_id in self._fires or ids.count(fire_id) > 1:
                raise ConflictError(f"fire {fire_id} exists already")
        self._schedules[schedule_id] = updated
        for fire in fires:
            self._fires[fire.id] = stored_fire(fire)
        return updated

    async def delete_schedule(self, schedule_id: str) -> None:
        self._check()
        self._schedule(schedule_id)
        del self._schedules[schedule_id]
        for fire_id in [f.id for f in self._fires.values() if f.schedule_id == schedule_id]:
            del self._fires[fire_id]

    async def list_fires(
        self, schedule_id: str, limit: int = 50, before: float | None = None
    ) -> list[Fire]:
        self._check()
        limit = max(1, min(int(limit), 1000))
        mine = [
            f
            for f in self._fires.values()
            if f.schedule_id == schedule_id and (before is None or f.scheduled_at < before)
        ]
        return sorted(mine, key=lambda f: (f.scheduled_at, f.id), reverse=True)[:limit]

    async def active_fires(self) -> list[Fire]:
        self._check()
        return sorted(
            (f for f in self._fires.values() if f.active), key=lambda f: (f.scheduled_at, f.id)
        )

    async def update_fire(
        self,
        fire_id: str,
        outcomes: Collection[FireOutcome],
        changes: Mapping[str, Any],
        *,
        unsettled: bool = False,
    ) -> Fire:
        self._check()
        bad = sorted(set(changes) - FIRE_MUTABLE)
        if bad:
            raise ValueError(f"fire fields that cannot change: {', '.join(bad)}")
        fire = self._fires.get(fire_id)
        if fire is None or fire.outcome not in outcomes or (unsettled and fire.result):
            stored = (fire.outcome.value, fire.result) if fire is not None else None
            raise fire_conflict(fire_id, stored)
        updated = stored_fire(fire.with_changes(**changes))
        self._fires[fire_id] = updated
        return updated

    # -- templates

    async def add_template(self, record: TemplateRecord) -> TemplateRecord:
        self._check()
        versions = self._templates.setdefault(record.name, {})
        if record.version in versions:
            raise ConflictError(f"template {record.name} has a version {record.version}")
        versions[record.version] = record
        return record

    async def get_template(self, name: str, version: int | None = None) -> TemplateRecord:
        self._check()
        versions = self._templates.get(name) or {}
        wanted = max(versions, default=None) if version is None else version
        if wanted is None or wanted not in versions:
            raise template_not_found(name, version)
        return versions[wanted]

    async def list_templates(self) -> list[TemplateRecord]:
        self._check()
        return [
            versions[max(versions)]
            for name, versions in sorted(self._templates.items())
            if versions
        ][:MAX_SCHEDULES]

    async def template_versions(self, name: str) -> list[TemplateRecord]:
        self._check()
        versions = self._templates.get(name) or {}
        return [versions[v] for v in sorted(versions, reverse=True)]

    async def delete_template(self, name: str) -> None:
        self._check()
        if not self._templates.pop(name, None):
            raise template_not_found(name, None)
