"""The schedule timer and the schedule and template use cases on a real store, with the clock
driven by the test (no sleeping): fires start jobs and pipeline runs under their fire's id,
forbid and replace, catch-up after downtime, the pause after failed runs, exactly once across
a crash between claim and start and across two timers sharing a store, audit entries, and the
errors a client sees."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hodei.adapters.artifacts.files import FileArtifactStore
from hodei.adapters.store.memory import MemoryJobStore
from hodei.adapters.store.sqlite import SqliteJobStore
from hodei.domain.jobs import Job, JobSpec, JobState
from hodei.domain.schedules import Fire, FireOutcome, fire_id
from hodei.errors import ConflictError, NotFoundError, ValidationError
from hodei.ports import JobStore
from hodei.server.core.background import Background
from hodei.server.core.bus import EventBus, JobChanged
from hodei.server.core.orchestrator import Orchestrator
from hodei.server.core.pipelines import PipelineEngine, Pipelines
from hodei.server.core.schedules import (
    Launcher,
    ScheduleRequest,
    Schedules,
    ScheduleTimer,
    Templates,
)
from hodei.server.security.audit import Auditor

T0 = datetime(2024, 6, 3, 12, 0, tzinfo=UTC).timestamp()  # a whole minute


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Rig:
    """The core parts a schedule needs, on `store`, at the time `clock` says."""

    def __init__(self, store: JobStore, tmp: Path, clock: Clock) -> None:
        self.store, self.clock = store, clock
        self.bus = EventBus()
        self.background = Background()
        self.auditor = Auditor(store, clock=clock)
        self.orch = Orchestrator(store, self.bus, clock=clock)
        self.cancelled: list[str] = []
        self.engine = PipelineEngine(
            store, self.orch, self.cancel, FileArtifactStore(tmp / "a"), self.bus, self.background
        )
        self.pipelines = Pipelines(store, self.engine, self.auditor, clock=clock)
        self.launcher = Launcher(self.orch, self.pipelines)
        self.timer = ScheduleTimer(
            store, self.launcher, self.cancel, self.pipelines.cancel, self.auditor, clock=clock
        )
        self.schedules = Schedules(store, self.timer, self.auditor, clock=clock)
        self.templates = Templates(store, self.launcher, self.auditor, clock=clock)
        self.bus.subscribe(JobChanged, self.engine.on_job_changed)

    async def cancel(self, job_id: str) -> Job:
        self.cancelled.append(job_id)
        job = await self.store.get_job(job_id)
        return await self.orch.finish(job, JobState.CANCELLED, None, "cancelled")

    async def at(self, when: float) -> None:
        self.clock.now = when
        await self.timer.tick()

    async def fires(self, name: str) -> list[Fire]:
        s = await self.store.get_schedule(name)
        return list(reversed(await self.store.list_fires(s.id, limit=1000)))

    async def jobs(self) -> list[Job]:
        jobs, _ = await self.store.list_jobs(limit=1000)
        return list(reversed(jobs))

    async def end(self, job_id: str, state: JobState) -> None:
        job = await self.store.get_job(job_id)
        await self.orch.finish(job, state, 1 if state is JobState.FAILED else None, "")


@pytest.fixture(params=["memory", "sqlite"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    store: JobStore = (
        MemoryJobStore() if request.param == "memory" else SqliteJobStore(tmp_path / "h.db")
    )
    await store.open()
    r = Rig(store, tmp_path, Clock(T0 - 30))
    try:
        yield r
    finally:
        await r.background.stop()
        await store.close()


def every_minute(name: str = "tick", **kw: object) -> ScheduleRequest:
    return ScheduleRequest(name, "* * * * *", spec=JobSpec(command="sleep 90"), **kw)  # type: ignore[arg-type]


async def test_fires_on_time_with_the_fire_id_as_job_id(rig: Rig) -> None:
    s = await rig.schedules.create(every_minute(), "alice")
    assert s.next_fire == T0
    await rig.at(T0 - 0.001)
    assert await rig.jobs() == []
    assert rig.timer.seconds_to_next() == pytest.approx(0.001, abs=1e-6)  # a timer, not a poll
    await rig.at(T0 + 0.2)
    (job,) = await rig.jobs()
    assert job.id == fire_id(s.id, T0)
    assert job.spec.env == {"HODEI_SCHEDULE": "tick", "HODEI_SCHEDULE_FIRE": job.id}
    (fire,) = await rig.fires("tick")
    assert fire.outcome is FireOutcome.STARTED and fire.job_id == job.id
    assert (await rig.store.get_schedule("tick")).next_fire == T0 + 60
    await rig.at(T0 + 0.5)  # nothing more until the next minute
    assert len(await rig.jobs()) == 1
    actions = [e.action for e in (await rig.store.list_audit(limit=50))[0]]
    assert "schedule.create" in actions and "schedule.fire" in actions


async def test_forbid_skips_while_the_previous_run_is_active(rig: Rig) -> None:
    await rig.schedules.create(every_minute(overlap="forbid"), "")
    await rig.at(T0 + 1)
    await rig.at(T0 + 61)  # the 90 s job still runs: skipped
    await rig.end((await rig.jobs())[0].id, JobState.FAILED)
    await rig.at(T0 + 121)
    fires = await rig.fires("tick")
    assert [f.outcome for f in fires] == [
        FireOutcome.STARTED,
        FireOutcome.SKIPPED,
        FireOutcome.STARTED,
    ]
    assert "previous run is still active (overlap: forbid)" in fires[1].reason
    assert fires[0].result == "failed"
    assert len(await rig.jobs()) == 2


async def test_replace_cancels_the_previous_run(rig: Rig) -> None:
    await rig.schedules.create(every_minute(overlap="replace"), "")
    await rig.at(T0 + 1)
    first = (await rig.jobs())[0]
    await rig.at(T0 + 61)
    assert rig.cancelled == [first.id]
    jobs = await rig.jobs()
    assert [j.state for j in jobs] == [JobState.CANCELLED, JobState.QUEUED]


async def test_catch_up_after_downtime(rig: Rig) -> None:
    once = await rig.schedules.create(every_minute("once", catch_up="once"), "")
    skip = await rig.schedules.create(every_minute("skip", catch_up="skip"), "")
    await rig.at(T0 + 1)  # both fire on time
    # The server is down for three minutes: nothing ticks until T0 + 4 min + 30 s.
    await rig.at(T0 + 270)
    jobs = [j.id for j in await rig.jobs()]
    assert jobs.count(fire_id(once.id, T0)) == 1 and fire_id(once.id, T0 + 240) in jobs
    assert [j for j in jobs if j.startswith(skip.id)] == [fire_id(skip.id, T0)]
    skipped = [f for f in await rig.fires("skip") if f.outcome is FireOutcome.SKIPPED]
    assert [f.covers for f in skipped] == [4] and "catch-up: skip" in skipped[0].reason
    once_rows = await rig.fires("once")
    assert [(f.outcome, f.covers) for f in once_rows] == [
        (FireOutcome.STARTED, 1),
        (FireOutcome.SKIPPED, 3),
        (FireOutcome.STARTED, 1),
    ]


async def test_pause_after_failures_and_resume(rig: Rig) -> None:
    await rig.schedules.create(every_minute(pause_after=2), "")
    for minute in range(2):
        await rig.at(T0 + 60 * minute + 1)
        await rig.end((await rig.jobs())[-1].id, JobState.FAILED)
    await rig.at(T0 + 100)
    s = await rig.store.get_schedule("tick")
    assert s.paused and "paused after 2 failed runs in a row" in s.pause_reason
    await rig.at(T0 + 600)  # paused: no fire
    assert len(await rig.jobs()) == 2
    entries, _ = await rig.store.list_audit(limit=100)
    assert any(e.action == "schedule.pause" and "2 failed runs" in e.detail for e in entries)
    resumed = await rig.schedules.resume("tick", "bob")
    assert not resumed.paused and resumed.pause_reason == "" and resumed.failures == 0
    await rig.at(T0 + 601)  # missed while paused: catch-up skip, then on time again
    assert (await rig.store.get_schedule("tick")).next_fire == T0 + 660


async def test_a_crash_between_claim_and_start_starts_the_job_once(
    rig: Rig, tmp_path: Path
) -> None:
    s = await rig.schedules.create(every_minute(), "")
    fire = Fire(
        id=fire_id(s.id, T0),
        schedule_id=s.id,
        scheduled_at=T0,
        outcome=FireOutcome.STARTING,
        decided_at=T0,
        job_id=fire_id(s.id, T0),
    )
    # What a server killed right after its claim leaves behind: the claim, no job.
    await rig.store.claim_fires(s.id, s.version, {"next_fire": T0 + 60}, [fire])
    rig.clock.now = T0 + 5
    await rig.timer.resume()  # the restarted server
    await rig.timer.resume()  # and again (a second restart, or a second server)
    assert [j.id for j in await rig.jobs()] == [fire.id]
    (stored,) = await rig.fires("tick")
    assert stored.outcome is FireOutcome.STARTED


async def test_two_timers_on_one_store_start_each_fire_once(rig: Rig, tmp_path: Path) -> None:
    other = Rig(rig.store, tmp_path / "other", rig.clock)
    await rig.schedules.create(every_minute(), "")
    for minute in range(5):
        rig.clock.now = T0 + 60 * minute + 0.5
        await asyncio.gather(rig.timer.tick(), other.timer.tick(), rig.timer.tick())
    jobs = await rig.jobs()
    assert len(jobs) == len({j.id for j in jobs}) == 5
    assert len(await rig.fires("tick")) == 5
    await other.background.stop()


async def test_run_now_and_delete(rig: Rig) -> None:
    await rig.schedules.create(every_minute(), "")
    fire = await rig.schedules.run_now("tick", "carol")
    assert fire.manual and fire.outcome is FireOutcome.STARTED
    assert [j.id for j in await rig.jobs()] == [fire.id]
    view = await rig.schedules.get("tick")
    assert view.upcoming[:2] == (T0, T0 + 60) and view.fires[0].id == fire.id
    await rig.schedules.delete("tick", "carol")
    with pytest.raises(NotFoundError):
        await rig.schedules.get("tick")
    actions = [e.action for e in (await rig.store.list_audit(limit=50))[0]]
    assert "schedule.run_now" in actions and "schedule.delete" in actions


HOSTILE = "$(touch /tmp/pwned); reboot"
TEMPLATE = """
parameters:
  - {name: target, type: string, required: true}
  - {name: level, type: enum, values: [full, quick], default: quick}
job:
  command: printf
  arguments: ["%s\\n", "${{ params.target }}", "${{ params.level }}"]
"""


async def test_template_versions_runs_and_schedules(rig: Rig) -> None:
    v1 = await rig.templates.create("backup", TEMPLATE, "dave")
    v2 = await rig.templates.create("backup", TEMPLATE.replace("quick]", "quick, none]"), "dave")
    assert (v1.version, v2.version) == (1, 2)
    launched = await rig.templates.run("backup", {"target": HOSTILE}, "dave")
    assert launched.job is not None and launched.template_version == 2
    spec = launched.job.spec
    assert spec.arguments == ("%s\n", HOSTILE, "quick")
    assert spec.env["HODEI_TEMPLATE"] == "backup" and spec.env["HODEI_TEMPLATE_VERSION"] == "2"
    old = await rig.templates.run("backup", {"target": "x"}, "dave", version=1)
    assert old.job is not None and old.job.spec.env["HODEI_TEMPLATE_VERSION"] == "1"
    for params, message in [
        ({}, "missing required parameter target"),
        ({"target": "x", "level": "slow"}, "is not one of full, quick, none"),
    ]:
        with pytest.raises(ValidationError, match=message):
            await rig.templates.run("backup", params, "dave")
    s = await rig.schedules.create(
        ScheduleRequest("nightly", "0 3 * * *", template="backup", params={"target": "db"}), ""
    )
    await rig.at(s.next_fire + 1)  # type: ignore[operator]
    (fire,) = await rig.fires("nightly")
    assert fire.template_version == 2 and fire.outcome is FireOutcome.STARTED
    job = await rig.store.get_job(fire.id)
    assert job.spec.arguments[1] == "db" and job.spec.env["HODEI_SCHEDULE"] == "nightly"


PIPELINE = "name: p\nsteps:\n  a:\n    run: echo a\n"


async def test_a_pipeline_schedule_starts_a_run_under_the_fire_run_id(rig: Rig) -> None:
    s = await rig.schedules.create(ScheduleRequest("pipe", "@hourly", pipeline=PIPELINE), "")
    assert s.next_fire == T0
    await rig.at(T0 + 1)
    (fire,) = await rig.fires("pipe")
    assert fire.run_id is not None and fire.outcome is FireOutcome.STARTED
    run = await rig.store.get_run(fire.run_id)
    assert run.name == "p"
    with pytest.raises(ConflictError):  # a second try of the same fire is refused
        await rig.pipelines.run(PIPELINE, {}, run_id=fire.run_id)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (ScheduleRequest("a", "61 * * * *", spec=JobSpec("true")), "invalid minute field '61'"),
        (ScheduleRequest("a", "@daily", "Mars/Base", spec=JobSpec("true")), "unknown time zone"),
        (ScheduleRequest("a", "@daily", spec=JobSpec("true"), overlap="x"), "overlap must be"),
        (ScheduleRequest("a", "@daily"), "exactly one of"),
        (ScheduleRequest("a b", "@daily", spec=JobSpec("true")), "schedule name must be"),
        (ScheduleRequest("a", "0 0 30 2 *", spec=JobSpec("true")), "matches no date"),
        (ScheduleRequest("a", "@daily", template="nope"), "no template nope"),
    ],
)
async def test_bad_requests(rig: Rig, request_: ScheduleRequest, message: str) -> None:
    with pytest.raises((ValidationError, NotFoundError), match=message):
        await rig.schedules.create(request_, "")


async def test_minimum_interval(rig: Rig) -> None:
    strict = Schedules(rig.store, rig.timer, rig.auditor, min_interval_s=300, clock=rig.clock)
    with pytest.raises(ValidationError, match="minimum interval of 300s"):
        await strict.create(ScheduleRequest("a", "*/2 * * * *", spec=JobSpec("true")), "")
    await strict.create(ScheduleRequest("a", "*/5 * * * *", spec=JobSpec("true")), "")
    with pytest.raises(ConflictError, match="already exists"):
        await strict.create(ScheduleRequest("a", "*/5 * * * *", spec=JobSpec("true")), "")


async def test_the_loop_stops_when_cancelled_right_after_a_poke(rig: Rig) -> None:
    loop = asyncio.create_task(rig.timer.run())
    for _ in range(3):
        await asyncio.sleep(0)  # the loop is waiting for its next fire or a poke
    rig.timer.poke()
    loop.cancel()  # the server stopping at that moment must still stop the loop
    done, _ = await asyncio.wait({loop}, timeout=10)
    assert done == {loop} and loop.cancelled()
