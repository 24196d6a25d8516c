"""The ScheduleStore and TemplateStore contract: one suite that every store adapter passes
(SQLite, PostgreSQL and the in-memory store), as test_pipeline_store.py does for pipelines."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from store_backends import Backend, needs_a_database, postgres_backend, reopen, sqlite_backend

from hodei.domain.jobs import Job, JobSpec
from hodei.domain.schedules import CatchUp, Fire, FireOutcome, Overlap, Schedule, TargetKind
from hodei.domain.templates import TemplateRecord
from hodei.errors import ConflictError, NotFoundError
from hodei.ports import JobStore

STARTING, STARTED, SKIPPED = FireOutcome.STARTING, FireOutcome.STARTED, FireOutcome.SKIPPED


def full_schedule(sid: str = "s0123456789ab", name: str = "nightly-ünï") -> Schedule:
    return Schedule(
        id=sid,
        name=name,
        cron="0 3 * * 1-5",
        timezone="Europe/Madrid",
        kind=TargetKind.JOB,
        spec=JobSpec(command="echo", arguments=("a b", "☃"), env={"K": "v\x00"}, timeout_s=5.5),
        source="",
        params={"k": "värde", "empty": ""},
        overlap=Overlap.FORBID,
        catch_up=CatchUp.ALL,
        catch_up_limit=7,
        starting_deadline_s=90.5,
        pause_after=3,
        paused=True,
        pause_reason="paused after 3 failed runs ✗",
        failures=3,
        next_fire=1718000000.0 + 1.0 / 3.0,
        created_at=1.0 / 7.0,
        created_by="alice",
        updated_at=2.5,
        version=4,
    )


def fire(fid: str, at: float, outcome: FireOutcome = STARTING, **changes: Any) -> Fire:
    base = Fire(id=fid, schedule_id="s0123456789ab", scheduled_at=at, outcome=outcome)
    return base.with_changes(**changes)


async def test_schedule_round_trip_and_listing(store: JobStore) -> None:
    s = await store.create_schedule(full_schedule())
    assert s == full_schedule()
    assert await store.get_schedule("nightly-ünï") == s
    pipeline = full_schedule("s00000000000b", "b-pipe").with_changes(
        kind=TargetKind.PIPELINE, spec=None, source="name: p\nsteps: []\n", next_fire=None
    )
    await store.create_schedule(pipeline)
    assert [x.name for x in await store.list_schedules()] == ["b-pipe", "nightly-ünï"]
    assert (await store.get_schedule("b-pipe")).spec is None
    with pytest.raises(ConflictError, match="already exists"):
        await store.create_schedule(full_schedule("s00000000000c"))
    with pytest.raises(NotFoundError):
        await store.get_schedule("nope")


async def test_update_is_a_compare_and_swap(store: JobStore) -> None:
    s = await store.create_schedule(full_schedule())
    updated = await store.update_schedule(s.id, 4, {"paused": False, "pause_reason": ""})
    assert updated.version == 5 and not updated.paused and updated.failures == 3
    with pytest.raises(ConflictError, match="version 5, not 4"):
        await store.update_schedule(s.id, 4, {"failures": 0})
    with pytest.raises(NotFoundError):
        await store.update_schedule("s999999999999", 0, {"failures": 0})
    with pytest.raises(ValueError, match="cannot change"):
        await store.update_schedule(s.id, 5, {"version": 9})


async def test_claim_commits_the_schedule_and_its_fires_together(store: JobStore) -> None:
    s = await store.create_schedule(full_schedule())
    one = fire("s0123456789ab-100", 100.0, job_id="s0123456789ab-100", template_version=2)
    skipped = fire("s0123456789ab-40", 40.0, SKIPPED, reason="missed ✗", covers=3)
    claimed = await store.claim_fires(s.id, s.version, {"next_fire": 160.0}, [skipped, one])
    assert claimed.next_fire == 160.0 and claimed.version == s.version + 1
    assert await store.list_fires(s.id) == [one, skipped]
    assert await store.list_fires(s.id, before=100.0) == [skipped]
    assert await store.list_fires(s.id, limit=1) == [one]
    # A second claim of the same version (another server, or this one again) changes nothing.
    with pytest.raises(ConflictError):
        await store.claim_fires(s.id, s.version, {"next_fire": 999.0}, [fire("x-1", 1.0)])
    # A fire that exists refuses the whole claim: the schedule's change is undone with it.
    again = fire("s0123456789ab-100", 100.0)
    with pytest.raises(ConflictError, match="exists already"):
        await store.claim_fires(s.id, claimed.version, {"next_fire": 999.0}, [again])
    assert (await store.get_schedule(s.name)).next_fire == 160.0
    assert len(await store.list_fires(s.id)) == 2


async def test_fires_change_by_compare_and_swap(store: JobStore) -> None:
    s = await store.create_schedule(full_schedule())
    started = fire("s0123456789ab-1", 1.0)
    done = fire("s0123456789ab-2", 2.0, STARTED, result="succeeded")
    await store.claim_fires(s.id, s.version, {}, [started, done])
    assert await store.active_fires() == [started]
    moved = await store.update_fire(started.id, {STARTING}, {"outcome": STARTED, "job_id": "j"})
    assert moved.outcome is STARTED and moved.job_id == "j"
    with pytest.raises(ConflictError, match="is started"):
        await store.update_fire(started.id, {STARTING}, {"outcome": STARTED})
    settled = await store.update_fire(started.id, {STARTED}, {"result": "failed"}, unsettled=True)
    assert settled.result == "failed" and await store.active_fires() == []
    with pytest.raises(ConflictError, match="ended failed"):
        await store.update_fire(started.id, {STARTED}, {"result": "failed"}, unsettled=True)
    with pytest.raises(NotFoundError):
        await store.update_fire("nope", {STARTED}, {"result": "x"})


async def test_delete_takes_the_fires(store: JobStore) -> None:
    s = await store.create_schedule(full_schedule())
    await store.claim_fires(s.id, s.version, {}, [fire("s0123456789ab-1", 1.0)])
    await store.delete_schedule(s.id)
    assert await store.list_schedules() == [] and await store.list_fires(s.id) == []
    assert await store.active_fires() == []
    with pytest.raises(NotFoundError):
        await store.delete_schedule(s.id)


def version(name: str, number: int, kind: str = "job") -> TemplateRecord:
    return TemplateRecord(name, number, f"job: {{command: echo {number}}} ☃", kind, "d", 1.5, "bob")


async def test_template_versions(store: JobStore) -> None:
    for record in (version("b", 1), version("a", 1), version("b", 2), version("a", 2, "pipeline")):
        assert await store.add_template(record) == record
    with pytest.raises(ConflictError):
        await store.add_template(version("b", 2))
    assert await store.get_template("b") == version("b", 2)
    assert await store.get_template("b", 1) == version("b", 1)
    assert await store.list_templates() == [version("a", 2, "pipeline"), version("b", 2)]
    assert await store.template_versions("b") == [version("b", 2), version("b", 1)]
    with pytest.raises(NotFoundError, match="no version 9 of template b"):
        await store.get_template("b", 9)
    await store.delete_template("b")
    with pytest.raises(NotFoundError):
        await store.get_template("b")
    with pytest.raises(NotFoundError):
        await store.delete_template("b")
    assert await store.template_versions("b") == []


async def test_survives_a_restart(backend: Backend) -> None:
    needs_a_database(backend, "nothing outlives the process")
    first = await reopen(backend)
    s = await first.create_schedule(full_schedule())
    await first.claim_fires(s.id, s.version, {"next_fire": 5.0}, [fire("s0123456789ab-1", 1.0)])
    await first.add_template(version("t", 1))
    await first.close()
    second = await reopen(backend)
    try:
        assert (await second.get_schedule(s.name)).next_fire == 5.0
        assert [f.id for f in await second.active_fires()] == ["s0123456789ab-1"]
        assert await second.get_template("t") == version("t", 1)
    finally:
        await second.close()


async def test_a_database_of_the_previous_version_gets_the_schedule_tables(
    backend: Backend,
) -> None:
    needs_a_database(backend, "no schema: nothing is kept on disk to migrate")
    steps = [m.description for m in backend.migrations]
    cut = steps.index("schedules, their fires and job templates")
    old = await reopen(backend, migrations=backend.migrations[:cut])
    job = await old.create_job(Job(id="j1", spec=JobSpec(command="true"), created_at=1.0))
    await old.close()
    assert not await backend.has_table("schedules")
    upgraded = await reopen(backend)
    try:
        assert await backend.version() == len(backend.migrations)  # later steps too
        for table in ("schedules", "schedule_fires", "templates"):
            assert await backend.has_table(table)
        assert await upgraded.get_job("j1") == job
        assert await upgraded.create_schedule(full_schedule()) == full_schedule()
    finally:
        await upgraded.close()


@pytest.fixture(params=["sqlite", "postgres"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return sqlite_backend(tmp_path / "shared.db")
    return postgres_backend(request.getfixturevalue("postgres_dsn"))


async def test_servers_claiming_the_same_fire_win_once(shared: Backend) -> None:
    one, two = await reopen(shared), await reopen(shared)
    try:
        s = await one.create_schedule(full_schedule())
        wins = 0
        current = s.version
        for minute in range(20):
            at = 60.0 * minute
            claim = [fire(f"s0123456789ab-{int(at)}", at)]
            results = await asyncio.gather(
                one.claim_fires(s.id, current, {"next_fire": at + 60}, claim),
                two.claim_fires(s.id, current, {"next_fire": at + 60}, claim),
                return_exceptions=True,
            )
            won = [r for r in results if isinstance(r, Schedule)]
            assert len(won) == 1 and all(
                isinstance(r, ConflictError) for r in results if not isinstance(r, Schedule)
            )
            wins += 1
            current = won[0].version
        assert len(await one.list_fires(s.id, limit=100)) == wins == 20
    finally:
        await one.close()
        await two.close()
