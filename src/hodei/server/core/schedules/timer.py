"""The schedule timer: it sleeps until the next fire of any schedule (no polling), then fires
what is due, exactly once across restarts and servers sharing the store.

Firing a schedule:

1. Read it, settle the fires whose runs ended (each end counted once: a compare-and-swap on
   the fire's empty result), and ask the domain (`policy.plan`) what each due time does.
2. **Claim**: one store transaction writes the schedule's new `next_fire` (a compare-and-swap
   on its version) and one row per decision, a starting fire carrying the id of the job (the
   fire's id) or pipeline run (`fire_run_id`) it will start. Another server, or this one
   before a crash, that claimed the same version wins or loses whole.
3. **Start**: queue the job, or the run, under that id. The store refuses a second one, so a
   fire starts at most one run; a fire left `starting` by a crash is started again at start-up
   (or by any server once it is older than STALE_START_S), and the refusal then says it exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from hodei.domain.jobs import Job
from hodei.domain.pipelines.runs import PipelineRun
from hodei.domain.schedules import (
    Fire,
    FireOutcome,
    Schedule,
    TargetKind,
    after_result,
    fire_id,
    fire_run_id,
    plan,
    schedule_of_fire,
)
from hodei.errors import ConflictError, HodeiError, NotFoundError, StoreError, ValidationError
from hodei.ports import JobStore
from hodei.server.core.bus import JobChanged
from hodei.server.core.schedules.templates import Launcher
from hodei.server.security.audit import Auditor

__all__ = ["ScheduleTimer"]

log = logging.getLogger(__name__)

RELOAD_S = 30.0  # read the schedules again at least this often (changes by other servers)
STALE_START_S = 30.0  # a fire still `starting` this long after its claim is started again
_TRIES = 5
SYSTEM = "hodei"  # the actor of what the timer does on its own (fires, failure pauses)
ENV_SCHEDULE, ENV_FIRE = "HODEI_SCHEDULE", "HODEI_SCHEDULE_FIRE"


class ScheduleTimer:
    def __init__(
        self,
        store: JobStore,
        launcher: Launcher,
        cancel_job: Callable[[str], Awaitable[Job]],
        cancel_run: Callable[[str, str], Awaitable[PipelineRun]],
        auditor: Auditor,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.launcher = launcher
        self._cancel_job = cancel_job
        self._cancel_run = cancel_run
        self.auditor = auditor
        self._clock = clock
        self._wake = asyncio.Event()
        self._next: dict[str, float] = {}  # schedule id -> next fire (active ones)
        self._names: dict[str, str] = {}  # schedule id -> name
        self._lock = asyncio.Lock()

    # -- the loop --------------------------------------------------------------------------

    def poke(self) -> None:
        """Look at the schedules again now (one was created, resumed or deleted)."""
        self._wake.set()

    def seconds_to_next(self) -> float:
        now = self._clock()
        soonest = min(self._next.values(), default=now + RELOAD_S)
        return max(0.0, min(soonest - now, RELOAD_S))

    async def run(self) -> None:
        """Forever (until cancelled at stop): fire what is due, then sleep until the next
        fire, a poke or RELOAD_S, whichever comes first."""
        while True:
            try:
                await self.tick()
            except HodeiError as exc:  # the store failing: try again at the next wake
                log.warning("schedules: %s", exc)
            self._wake.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for may swallow a cancel (the server
            # stopping) that comes together with a poke, and the loop would go on.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.seconds_to_next()):
                    await self._wake.wait()

    async def tick(self) -> None:
        """Fire every due schedule, settle ended runs, restart stale starting fires."""
        async with self._lock:
            schedules = await self.store.list_schedules()
            self._names = {s.id: s.name for s in schedules}
            now = self._clock()
            active = await self.store.active_fires()
            await self._settle(active, schedules)
            for fire in active:
                if fire.outcome is FireOutcome.STARTING and now - fire.decided_at > STALE_START_S:
                    await self._start(fire, self._by_id(schedules, fire.schedule_id))
            fresh = await self.store.list_schedules() if active else schedules
            self._next = {}
            for s in fresh:
                if s.paused or s.next_fire is None:
                    continue
                if s.next_fire <= now:
                    s = await self._fire_due(s)
                if not s.paused and s.next_fire is not None:
                    self._next[s.id] = s.next_fire

    async def resume(self) -> None:
        """At start-up: start again every fire a crash left `starting` (the store refuses
        the ones whose job or run exists), then fire what came due while the server was down."""
        schedules = await self.store.list_schedules()
        for fire in await self.store.active_fires():
            if fire.outcome is FireOutcome.STARTING:
                await self._start(fire, self._by_id(schedules, fire.schedule_id))
        await self.tick()

    @staticmethod
    def _by_id(schedules: Sequence[Schedule], schedule_id: str) -> Schedule | None:
        return next((s for s in schedules if s.id == schedule_id), None)

    # -- firing ----------------------------------------------------------------------------

    async def _fire_due(self, schedule: Schedule) -> Schedule:
        """Claim and start the due times of one schedule; the schedule as it is after."""
        s = schedule
        for _ in range(_TRIES):
            now = self._clock()
            mine = [f for f in await self.store.active_fires() if f.schedule_id == s.id]
            result = plan(s, now, previous_active=bool(mine))
            if not result.decisions and result.next_fire == s.next_fire:
                return s
            fires = [
                await self._fire_row(s, d.at, d.start, d.reason, d.covers, now, d.replace_previous)
                for d in result.decisions
            ]
            try:
                s = await self.store.claim_fires(
                    s.id, s.version, {"next_fire": result.next_fire}, fires
                )
            except ConflictError:  # another server (or a pause) changed it: look again
                try:
                    s = await self.store.get_schedule(s.name)
                except NotFoundError:
                    return s.with_changes(paused=True)
                continue
            await self._audit_fires(s, fires)
            for fire in fires:
                if fire.outcome is FireOutcome.STARTING:
                    if fire.replace_previous:
                        await self._replace(mine, s)
                    await self._start(fire, s)
            return s
        return s

    async def fire_now(self, s: Schedule, by: str) -> Fire:
        """run-now: one manual fire (whatever the overlap policy), claimed as any other."""
        for _ in range(_TRIES):
            now = self._clock()
            fire = await self._fire_row(s, now, True, f"run now by {by or 'a user'}", 1, now)
            fire = fire.with_changes(id=fire_id(s.id, now, manual=True), manual=True)
            fire = self._with_target_ids(s, fire)
            try:
                s = await self.store.claim_fires(s.id, s.version, {}, [fire])
            except ConflictError:
                s = await self.store.get_schedule(s.name)
                continue
            await self.auditor.record(by, "schedule.run_now", s.name, fire.id)
            await self._audit_fires(s, [fire])
            return await self._start(fire, s)
        raise ConflictError(f"schedule {s.name} keeps changing; try again")

    async def _fire_row(
        self,
        s: Schedule,
        at: float,
        start: bool,
        reason: str,
        covers: int,
        now: float,
        replace_previous: bool = False,
    ) -> Fire:
        fire = Fire(
            id=fire_id(s.id, at),
            schedule_id=s.id,
            scheduled_at=at,
            outcome=FireOutcome.STARTING if start else FireOutcome.SKIPPED,
            reason=reason,
            decided_at=now,
            covers=covers,
            replace_previous=replace_previous,
        )
        if not start:
            return fire
        if s.kind is TargetKind.TEMPLATE:
            try:
                record = await self.store.get_template(s.source)
                fire = fire.with_changes(template_version=record.version)
            except NotFoundError:
                pass  # the start fails with the reason
        return self._with_target_ids(s, fire)

    @staticmethod
    def _with_target_ids(s: Schedule, fire: Fire) -> Fire:
        pipeline = s.kind is TargetKind.PIPELINE
        if s.kind is TargetKind.TEMPLATE and fire.template_version == 0:
            return fire
        return fire.with_changes(
            job_id=None if pipeline else fire.id, run_id=fire_run_id(fire.id) if pipeline else None
        )

    async def _audit_fires(self, s: Schedule, fires: Sequence[Fire]) -> None:
        for fire in fires:
            what = fire.job_id or fire.run_id or "" if fire.outcome is FireOutcome.STARTING else ""
            detail = f"starting {what}" if what else f"{fire.outcome}: {fire.reason}"
            await self.auditor.record(SYSTEM, "schedule.fire", s.name, f"{fire.id} {detail}")

    async def _replace(self, active: Sequence[Fire], s: Schedule) -> None:
        """overlap replace: cancel the runs of the schedule's active fires."""
        for fire in active:
            try:
                if fire.job_id:
                    await self._cancel_job(fire.job_id)
                elif fire.run_id:
                    await self._cancel_run(fire.run_id, f"schedule {s.name} (overlap: replace)")
            except (ConflictError, NotFoundError):
                pass  # it ended meanwhile

    async def _start(self, fire: Fire, s: Schedule | None) -> Fire:
        """Create the fire's job or run under its id; the fire as stored after."""
        if s is None:
            return await self._failed(fire, "its schedule was deleted")
        env = {ENV_SCHEDULE: s.name, ENV_FIRE: fire.id}
        by = f"schedule {s.name}"
        try:
            if s.kind is TargetKind.JOB:
                assert s.spec is not None
                await self.launcher.job(s.spec, env, fire.job_id)
            elif s.kind is TargetKind.PIPELINE:
                await self.launcher.pipeline(s.source, s.params, by, fire.run_id)
            else:
                if not fire.template_version:
                    return await self._failed(fire, f"no template {s.source}")
                record = await self.store.get_template(s.source, fire.template_version)
                await self.launcher.template(
                    record, s.params, env, by, job_id=fire.job_id, run_id=fire.run_id
                )
        except ConflictError:
            pass  # created already: by this server before a crash, or by another one
        except (ValidationError, NotFoundError) as exc:
            return await self._failed(fire, f"cannot start: {exc.message}")
        except StoreError as exc:
            log.warning("schedule %s: fire %s not started yet (%s)", s.name, fire.id, exc)
            return fire  # still starting: started again once stale
        try:
            return await self.store.update_fire(
                fire.id, {FireOutcome.STARTING}, {"outcome": FireOutcome.STARTED}
            )
        except (ConflictError, NotFoundError):
            return fire

    async def _failed(self, fire: Fire, reason: str) -> Fire:
        try:
            fire = await self.store.update_fire(
                fire.id, {FireOutcome.STARTING}, {"outcome": FireOutcome.FAILED, "reason": reason}
            )
        except (ConflictError, NotFoundError):
            return fire
        name = self._names.get(fire.schedule_id, fire.schedule_id)
        await self.auditor.record(SYSTEM, "schedule.fire", name, f"{fire.id} failed: {reason}")
        return fire

    # -- ends of runs ----------------------------------------------------------------------

    def on_job_changed(self, event: JobChanged) -> None:
        """A fire's job ended (here or on another server): settle it soon (the timer's loop
        does; the event only wakes it)."""
        if event.job.state.terminal and schedule_of_fire(event.job.id) is not None:
            self.poke()

    async def _settle(self, active: Sequence[Fire], schedules: Sequence[Schedule]) -> None:
        for fire in active:
            result = await self._result_of(fire)
            if not result:
                continue
            try:
                await self.store.update_fire(
                    fire.id,
                    {FireOutcome.STARTING, FireOutcome.STARTED},
                    {"outcome": FireOutcome.STARTED, "result": result},
                    unsettled=True,
                )
            except (ConflictError, NotFoundError):
                continue  # settled by another server
            s = self._by_id(schedules, fire.schedule_id)
            if s is not None and not fire.manual:
                await self._count(s, result)

    async def _result_of(self, fire: Fire) -> str:
        try:
            if fire.job_id:
                job = await self.store.get_job(fire.job_id)
                return job.state.value if job.state.terminal else ""
            if fire.run_id:
                run = await self.store.get_run(fire.run_id)
                return run.state.value if run.state.terminal else ""
        except NotFoundError:
            return ""  # not created yet (still starting)
        return ""

    async def _count(self, s: Schedule, result: str) -> None:
        """Failures in a row, and the pause after `pause_after` of them (audited)."""
        for _ in range(_TRIES):
            changes = after_result(s, result)
            if not changes:
                return
            try:
                updated = await self.store.update_schedule(s.id, s.version, changes)
            except ConflictError:
                s = await self.store.get_schedule(s.name)
                continue
            if updated.paused and not s.paused:
                await self.auditor.record(SYSTEM, "schedule.pause", s.name, updated.pause_reason)
            return
