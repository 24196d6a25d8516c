"""The schedule use cases both APIs share: create, read (with the next fire times and the last
fires), list, pause, resume, delete and run-now. Each is audited; firing is the timer's."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hodei.domain.jobs import JobSpec, validate_spec
from hodei.domain.pipelines import DEFAULT_LIMITS, parse_pipeline
from hodei.domain.schedules import (
    CatchUp,
    Fire,
    Overlap,
    Schedule,
    TargetKind,
    min_gap,
    new_schedule_id,
    next_fire,
    parse_cron,
    validate_name,
)
from hodei.domain.schedules.policy import MAX_CATCH_UP
from hodei.domain.templates import parse_template, resolve_values
from hodei.errors import ConflictError, ValidationError
from hodei.ports import JobStore
from hodei.server.core.schedules.timer import ScheduleTimer
from hodei.server.security.audit import Auditor

__all__ = ["ScheduleRequest", "ScheduleView", "Schedules"]

_TRIES = 5
MAX_PARAMS = 64


@dataclass(frozen=True, slots=True)
class ScheduleRequest:
    """What a client asks for: exactly one of spec, pipeline (a file's text) or template."""

    name: str
    cron: str
    timezone: str = "UTC"
    spec: JobSpec | None = None
    pipeline: str | None = None
    template: str | None = None
    params: Mapping[str, str] | None = None
    overlap: str = "allow"
    catch_up: str = "skip"
    catch_up_limit: int = 10
    starting_deadline_s: float = 0.0
    pause_after: int = 0


@dataclass(frozen=True, slots=True)
class ScheduleView:
    schedule: Schedule
    upcoming: tuple[float, ...]  # the next fire times
    fires: tuple[Fire, ...]  # the last fires, newest first


def _choice(kind: type[Overlap] | type[CatchUp], value: str, what: str) -> str:
    try:
        return kind(value).value
    except ValueError:
        allowed = ", ".join(v.value for v in kind)
        raise ValidationError(f"{what} must be one of {allowed}, not {value[:20]!r}") from None


class Schedules:
    def __init__(
        self,
        store: JobStore,
        timer: ScheduleTimer,
        auditor: Auditor,
        *,
        min_interval_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.timer = timer
        self.auditor = auditor
        self.min_interval_s = min_interval_s
        self._clock = clock

    async def _checked(self, r: ScheduleRequest) -> Schedule:
        validate_name(r.name)
        cron = parse_cron(r.cron, r.timezone)
        now = self._clock()
        gap = min_gap(cron, now)
        if gap is not None and gap < self.min_interval_s:
            raise ValidationError(
                f"cron expression {r.cron!r} fires every {gap:.0f}s at times, more often than "
                f"this server's minimum interval of {self.min_interval_s:.0f}s"
            )
        first = next_fire(cron, now)
        if first is None:
            raise ValidationError(f"cron expression {r.cron!r} matches no date")
        targets = [t for t in (r.spec, r.pipeline, r.template) if t is not None]
        if len(targets) != 1:
            raise ValidationError("give exactly one of a command, --pipeline or --template")
        params = dict(r.params or {})
        if len(params) > MAX_PARAMS:
            raise ValidationError(f"at most {MAX_PARAMS} params")
        if not 1 <= r.catch_up_limit <= MAX_CATCH_UP:
            raise ValidationError(f"catch-up limit must be 1-{MAX_CATCH_UP}")
        if r.starting_deadline_s < 0 or r.pause_after < 0:
            raise ValidationError("starting deadline and pause-after cannot be negative")
        kind, spec, source = TargetKind.JOB, None, ""
        if r.spec is not None:
            spec = validate_spec(r.spec)
            if params:
                raise ValidationError("params are for pipelines and templates")
        elif r.pipeline is not None:
            kind, source = TargetKind.PIPELINE, r.pipeline
            parse_pipeline(source, limits=DEFAULT_LIMITS, filename="pipeline.yaml")
        else:
            assert r.template is not None
            kind, source = TargetKind.TEMPLATE, r.template
            record = await self.store.get_template(r.template)  # NotFoundError if unknown
            resolve_values(parse_template(record.source), params)  # missing, wrong type...
        return Schedule(
            id=new_schedule_id(),
            name=r.name,
            cron=r.cron,
            timezone=r.timezone,
            kind=kind,
            spec=spec,
            source=source,
            params=params,
            overlap=Overlap(_choice(Overlap, r.overlap, "overlap")),
            catch_up=CatchUp(_choice(CatchUp, r.catch_up, "catch-up")),
            catch_up_limit=r.catch_up_limit,
            starting_deadline_s=float(r.starting_deadline_s),
            pause_after=int(r.pause_after),
            next_fire=first,
            created_at=now,
            updated_at=now,
        )

    async def create(self, request: ScheduleRequest, by: str) -> Schedule:
        """ValidationError saying what is wrong before anything is stored; ConflictError if
        the name is taken."""
        schedule = (await self._checked(request)).with_changes(created_by=by)
        stored = await self.store.create_schedule(schedule)
        detail = f"{stored.cron} ({stored.timezone}) {stored.kind}"
        await self.auditor.record(by, "schedule.create", stored.name, detail)
        self.timer.poke()
        return stored

    async def get(self, name: str, fires: int = 20) -> ScheduleView:
        s = await self.store.get_schedule(name)
        upcoming: list[float] = []
        if not s.paused and s.next_fire is not None:
            cron = parse_cron(s.cron, s.timezone)
            at: float | None = s.next_fire
            while at is not None and len(upcoming) < 5:
                upcoming.append(at)
                at = next_fire(cron, at)
        history = await self.store.list_fires(s.id, limit=fires)
        return ScheduleView(s, tuple(upcoming), tuple(history))

    async def listing(self, fires: int = 3) -> list[ScheduleView]:
        out = []
        for s in await self.store.list_schedules():
            history = await self.store.list_fires(s.id, limit=fires) if fires else []
            upcoming = (s.next_fire,) if s.next_fire is not None and not s.paused else ()
            out.append(ScheduleView(s, upcoming, tuple(history)))
        return out

    async def _change(self, name: str, changes: Mapping[str, object]) -> Schedule:
        for _ in range(_TRIES):
            s = await self.store.get_schedule(name)
            try:
                return await self.store.update_schedule(
                    s.id, s.version, {**changes, "updated_at": self._clock()}
                )
            except ConflictError:
                continue  # the timer fired it meanwhile: apply to what it is now
        raise ConflictError(f"schedule {name} keeps changing; try again")

    async def pause(self, name: str, by: str, reason: str = "") -> Schedule:
        why = reason or f"paused by {by or 'a user'}"
        s = await self._change(name, {"paused": True, "pause_reason": why[:500]})
        await self.auditor.record(by, "schedule.pause", name, why[:500])
        self.timer.poke()
        return s

    async def resume(self, name: str, by: str) -> Schedule:
        """Clears the pause and its reason and the failures in a row; the fires missed while
        paused are decided by the catch-up policy at once."""
        s = await self._change(name, {"paused": False, "pause_reason": "", "failures": 0})
        await self.auditor.record(by, "schedule.resume", name)
        self.timer.poke()
        return s

    async def delete(self, name: str, by: str) -> None:
        s = await self.store.get_schedule(name)
        await self.store.delete_schedule(s.id)
        await self.auditor.record(by, "schedule.delete", name)
        self.timer.poke()

    async def run_now(self, name: str, by: str) -> Fire:
        s = await self.store.get_schedule(name)
        return await self.timer.fire_now(s, by)
