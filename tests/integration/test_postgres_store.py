"""PostgresJobStore behaviour beyond the JobStore contract (tests/contract/test_job_store.py):
group commit, a row refused inside a batch, lost connections, the migration bookkeeping and the
row-lock claiming the schema is built for."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from hodei.adapters.store.postgres import SCHEMA_VERSION, PostgresJobStore
from hodei.domain.jobs import Job, JobSpec, JobState
from hodei.errors import ConflictError, StoreError

Q = JobState.QUEUED


def make_job(job_id: str, priority: int = 0) -> Job:
    return Job(id=job_id, spec=JobSpec(command="true", priority=priority), created_at=1.0)


@pytest.fixture
async def store(postgres_dsn: str) -> AsyncIterator[PostgresJobStore]:
    s = PostgresJobStore(f"{postgres_dsn}&application_name=hodei-under-test")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def admin(postgres_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(postgres_dsn)
    yield conn
    await conn.close()


async def test_concurrent_creates_are_group_committed(store: PostgresJobStore) -> None:
    before = store.creates.batches
    await asyncio.gather(*(store.create_job(make_job(f"g{i}")) for i in range(2000)))
    assert 1 <= store.creates.batches - before <= 2000 // 100


async def test_concurrent_transitions_are_group_committed(store: PostgresJobStore) -> None:
    await asyncio.gather(*(store.create_job(make_job(f"t{i}")) for i in range(1000)))
    before = store.moves.batches
    moves = (store.transition(f"t{i}", {Q}, JobState.ASSIGNED) for i in range(1000))
    await asyncio.gather(*moves)
    assert 1 <= store.moves.batches - before <= 1000 // 100


async def test_a_refused_row_fails_alone(store: PostgresJobStore) -> None:
    # PostgreSQL text cannot hold NUL: that job is refused, its batch neighbours are stored.
    bad = make_job("bad").with_changes(reason="nul \x00 here")
    jobs = [make_job("a"), bad, make_job("b")]
    results = await asyncio.gather(*(store.create_job(j) for j in jobs), return_exceptions=True)
    assert [type(r) for r in results] == [Job, StoreError, Job]
    assert "refused job bad" in str(results[1]) and "SQLSTATE 22021" in str(results[1])
    assert [j.id for j in await store.jobs_in_states({Q})] == ["a", "b"]


async def test_a_refused_transition_fails_alone(store: PostgresJobStore) -> None:
    for job_id in ("a", "bad", "b"):
        await store.create_job(make_job(job_id))
    moves = [
        store.transition("a", {Q}, JobState.ASSIGNED, {"reason": "fine"}),
        store.transition("bad", {Q}, JobState.ASSIGNED, {"reason": "nul \x00 here"}),
        store.transition("b", {Q}, JobState.ASSIGNED),
    ]
    results = await asyncio.gather(*moves, return_exceptions=True)
    assert [type(r) for r in results] == [Job, StoreError, Job]
    assert "refused job bad" in str(results[1])
    assert (await store.get_job("bad")).state == Q


async def test_lost_connections_become_store_errors_then_recover(
    store: PostgresJobStore, admin: asyncpg.Connection
) -> None:
    await store.create_job(make_job("before"))
    terminate = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = 'hodei-under-test'"
    )
    assert await admin.fetchval(terminate) >= 1
    # The pool replaces connections the server closed while they were idle.
    assert (await store.get_job("before")).id == "before"
    # Connections lost mid-statement fail those calls with StoreError, nothing else.
    calls = [
        store.create_job(make_job("during")),
        store.get_job("before"),
        admin.fetchval(terminate),
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, Job | StoreError | int) for r in results), results
    # A write may still meet a pooled connection whose end the pool has not seen yet: it fails
    # as a StoreError too (a write is never retried blindly), and the next one goes through.
    for attempt in range(20):
        try:
            await store.create_job(make_job("later"))
            break
        except ConflictError:  # the failed try had committed after all: it is stored
            break
        except StoreError:
            assert attempt < 19, "the store did not recover"
            await asyncio.sleep(0.05)
    assert (await store.get_job("later")).id == "later"


async def test_migrations_are_recorded(store: PostgresJobStore, admin: asyncpg.Connection) -> None:
    rows = await admin.fetch("SELECT version, description, applied_at FROM schema_migrations")
    assert [r["version"] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
    assert all(r["description"] and r["applied_at"] for r in rows)
    indexes = {r[0] for r in await admin.fetch("SELECT indexname FROM pg_indexes")}
    assert {"jobs_queue", "jobs_state_seq"} <= indexes


async def test_schema_supports_claiming_with_row_locks(
    store: PostgresJobStore, postgres_dsn: str
) -> None:
    # What several servers on one database will do: each claims the best queued jobs it can
    # lock, skipping the rows another server holds, so no job is claimed twice.
    for i, priority in enumerate([0, 5, 5, 1, 9, 0]):
        await store.create_job(make_job(f"c{i}", priority))
    claim = (
        "SELECT id FROM jobs WHERE state = 'queued' ORDER BY priority DESC, seq "
        "LIMIT 2 FOR UPDATE SKIP LOCKED"
    )
    one, two = await asyncpg.connect(postgres_dsn), await asyncpg.connect(postgres_dsn)
    try:
        async with one.transaction(), two.transaction():
            first = [r["id"] for r in await one.fetch(claim)]
            second = [r["id"] for r in await two.fetch(claim)]
    finally:
        await one.close()
        await two.close()
    assert (first, second) == (["c4", "c1"], ["c2", "c3"])


async def test_two_stores_racing_for_the_same_jobs_each_win_once(
    store: PostgresJobStore, postgres_dsn: str
) -> None:
    # Two servers' batches touch the same rows: no deadlock error, every job moved once.
    ids = [f"r{i:03}" for i in range(300)]
    await asyncio.gather(*(store.create_job(make_job(i)) for i in ids))
    other = PostgresJobStore(postgres_dsn)
    await other.open()
    try:
        calls = [
            s.transition(i, {Q}, JobState.ASSIGNED, {"worker_id": name})
            for i in ids
            for s, name in ((store, "one"), (other, "two"))
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await other.close()
    assert not [r for r in results if not isinstance(r, Job | ConflictError)]
    winners = [r for r in results if isinstance(r, Job)]
    assert sorted(j.id for j in winners) == ids
    stored = {j.id: j.worker_id for j in await store.jobs_in_states({JobState.ASSIGNED})}
    assert stored == {j.id: j.worker_id for j in winners}
