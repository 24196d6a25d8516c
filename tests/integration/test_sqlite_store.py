"""SqliteJobStore against real SQLite files."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hodei.adapters.store.sqlite import SCHEMA_VERSION, SqliteJobStore
from hodei.domain.jobs import Job, JobSpec, JobState
from hodei.errors import ConflictError, NotFoundError, StoreError

Q, A, R = JobState.QUEUED, JobState.ASSIGNED, JobState.RUNNING


def make_job(job_id: str, **spec: object) -> Job:
    return Job(id=job_id, spec=JobSpec(command="echo hi", **spec), created_at=1000.0)  # type: ignore[arg-type]


def full_job(job_id: str) -> Job:
    spec = JobSpec(
        command="run",
        arguments=("a", "b c"),
        name="full",
        env={"A": "1", "B": "two"},
        secrets=("TOKEN", "KEY"),
        labels={"team": "infra"},
        cpu=1.5,
        memory_bytes=1 << 30,
        timeout_s=60.0,
        max_retries=3,
        priority=7,
        queued_by="alice",
    )
    return Job(
        id=job_id,
        spec=spec,
        state=JobState.FAILED,
        exit_code=2,
        attempts=3,
        worker_id="w-1",
        created_at=1.25,
        started_at=2.5,
        finished_at=3.75,
        reason="exit 2",
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "hodei.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteJobStore]:
    s = SqliteJobStore(db_path)
    await s.open()
    yield s
    await s.close()


async def test_open_creates_parent_dirs_and_uses_wal(store: SqliteJobStore, db_path: Path) -> None:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        assert int(row[0]) == SCHEMA_VERSION


async def test_create_and_get_round_trip(store: SqliteJobStore) -> None:
    job = full_job("j1")
    created = await store.create_job(job)
    assert created.seq > 0
    assert created == job.with_changes(seq=created.seq)
    fetched = await store.get_job("j1")
    assert fetched == created
    assert isinstance(fetched.spec.arguments, tuple)
    assert isinstance(fetched.spec.secrets, tuple)
    assert isinstance(fetched.state, JobState)


async def test_create_assigns_increasing_seq(store: SqliteJobStore) -> None:
    seqs = [(await store.create_job(make_job(f"j{i}"))).seq for i in range(5)]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 5


async def test_duplicate_id_conflicts(store: SqliteJobStore) -> None:
    await store.create_job(make_job("dup"))
    with pytest.raises(ConflictError, match="job dup already exists"):
        await store.create_job(make_job("dup"))


async def test_get_missing_not_found(store: SqliteJobStore) -> None:
    with pytest.raises(NotFoundError, match="no job nope"):
        await store.get_job("nope")


async def test_transition_success(store: SqliteJobStore) -> None:
    await store.create_job(make_job("t1"))
    job = await store.transition("t1", {Q}, A, {"worker_id": "w9", "attempts": 1})
    assert (job.state, job.worker_id, job.attempts) == (A, "w9", 1)
    job = await store.transition(
        "t1", [A, R], JobState.SUCCEEDED, {"exit_code": 0, "finished_at": 9.0, "reason": ""}
    )
    assert job == await store.get_job("t1")
    assert (job.state, job.exit_code, job.finished_at, job.worker_id) == (
        JobState.SUCCEEDED,
        0,
        9.0,
        "w9",
    )


async def test_transition_conflict_names_actual_state(store: SqliteJobStore) -> None:
    await store.create_job(make_job("t2"))
    with pytest.raises(ConflictError, match="job t2 is queued, not assigned or running"):
        await store.transition("t2", {R, A}, JobState.SUCCEEDED)
    assert (await store.get_job("t2")).state == Q


async def test_transition_not_found(store: SqliteJobStore) -> None:
    with pytest.raises(NotFoundError, match="no job ghost"):
        await store.transition("ghost", {Q}, A)


@pytest.mark.parametrize("key", ["spec", "id", "seq", "state", "created_at", "bogus"])
async def test_transition_rejects_unknown_changes(store: SqliteJobStore, key: str) -> None:
    await store.create_job(make_job("t3"))
    with pytest.raises(ValueError, match=key):
        await store.transition("t3", {Q}, A, {key: 1})
    assert (await store.get_job("t3")).state == Q


async def test_concurrent_transitions_exactly_one_wins(store: SqliteJobStore) -> None:
    await store.create_job(make_job("race"))
    results = await asyncio.gather(
        *(store.transition("race", {Q}, A, {"worker_id": f"w{i}"}) for i in range(50)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, Job)]
    losers = [r for r in results if isinstance(r, ConflictError)]
    assert len(winners) == 1
    assert len(losers) == 49
    assert all("is assigned, not queued" in str(e) for e in losers)
    assert (await store.get_job("race")).worker_id == winners[0].worker_id


async def test_group_commit_batches(store: SqliteJobStore) -> None:
    before = store.commits
    created = await asyncio.gather(*(store.create_job(make_job(f"g{i}")) for i in range(2000)))
    commits = store.commits - before
    assert 1 <= commits < 2000
    assert len({job.seq for job in created}) == 2000
    stored = await store.jobs_in_states({Q})
    assert {job.id for job in stored} == {f"g{i}" for i in range(2000)}


async def test_conflict_in_batch_keeps_the_others(store: SqliteJobStore) -> None:
    await store.create_job(make_job("taken"))
    ids = ["a", "taken", "b", "a", "c"]
    results = await asyncio.gather(
        *(store.create_job(make_job(i)) for i in ids), return_exceptions=True
    )
    assert [type(r) for r in results] == [Job, ConflictError, Job, ConflictError, Job]
    assert {j.id for j in await store.jobs_in_states({Q})} == {"taken", "a", "b", "c"}


async def test_restart_durability(db_path: Path) -> None:
    first = SqliteJobStore(db_path)
    await first.open()
    full = await first.create_job(full_job("full"))
    plain = await first.create_job(make_job("plain"))
    moved = await first.transition("plain", {Q}, A, {"worker_id": "w1", "attempts": 1})
    await first.put_secret("S", b"\x00cipher")
    await first.close()

    second = SqliteJobStore(db_path)
    await second.open()
    try:
        assert await second.get_job("full") == full
        assert await second.get_job("plain") == moved
        assert moved.seq == plain.seq
        assert moved.exit_code is None and moved.started_at is None
        assert await second.get_secrets(["S"]) == {"S": b"\x00cipher"}
        newer = await second.create_job(make_job("after"))
        assert newer.seq > plain.seq
    finally:
        await second.close()


async def test_list_jobs_pagination(store: SqliteJobStore) -> None:
    for i in range(7):
        await store.create_job(make_job(f"p{i}"))
    pages: list[list[str]] = []
    cursor: int | None = None
    while True:
        items, cursor = await store.list_jobs(limit=3, cursor=cursor)
        pages.append([j.id for j in items])
        if cursor is None:
            break
    assert pages == [["p6", "p5", "p4"], ["p3", "p2", "p1"], ["p0"]]


async def test_list_jobs_exact_page_has_no_next(store: SqliteJobStore) -> None:
    for i in range(3):
        await store.create_job(make_job(f"e{i}"))
    items, cursor = await store.list_jobs(limit=3)
    assert len(items) == 3 and cursor is None
    items, cursor = await store.list_jobs(limit=0)  # clamped to 1
    assert [j.id for j in items] == ["e2"] and cursor == items[0].seq


async def test_list_jobs_state_filter(store: SqliteJobStore) -> None:
    for i in range(6):
        await store.create_job(make_job(f"s{i}"))
    for i in (1, 3, 4):
        await store.transition(f"s{i}", {Q}, A)
    items, cursor = await store.list_jobs(state=A, limit=2)
    assert [j.id for j in items] == ["s4", "s3"]
    items, cursor = await store.list_jobs(state=A, limit=2, cursor=cursor)
    assert [j.id for j in items] == ["s1"] and cursor is None
    items, _ = await store.list_jobs(state=Q)
    assert [j.id for j in items] == ["s5", "s2", "s0"]
    assert await store.list_jobs(state=JobState.FAILED) == ([], None)


async def test_jobs_in_states_oldest_first(store: SqliteJobStore) -> None:
    for i in range(5):
        await store.create_job(make_job(f"o{i}", priority=5 - i))
    await store.transition("o1", {Q}, A)
    await store.transition("o3", {Q}, A)
    await store.transition("o3", {A}, R)
    await store.transition("o4", {Q}, JobState.CANCELLED)
    assert [j.id for j in await store.jobs_in_states({Q})] == ["o0", "o2"]
    assert [j.id for j in await store.jobs_in_states([A, R, Q])] == ["o0", "o1", "o2", "o3"]
    assert await store.jobs_in_states([]) == []


async def test_secrets(store: SqliteJobStore) -> None:
    await store.put_secret("B", b"bee")
    await store.put_secret("A", b"ay")
    await store.put_secret("A", b"ay2")
    assert await store.get_secrets(["A", "B", "missing"]) == {"A": b"ay2", "B": b"bee"}
    assert await store.get_secrets([]) == {}
    records = await store.list_secrets()
    assert [r.name for r in records] == ["A", "B"]
    assert all(r.updated_at > 0 for r in records)
    await store.delete_secret("A")
    assert await store.get_secrets(["A"]) == {}
    with pytest.raises(NotFoundError, match="no secret A"):
        await store.delete_secret("A")


async def test_get_many_secrets(store: SqliteJobStore) -> None:
    names = [f"S{i}" for i in range(1200)]  # more than one IN (...) chunk
    await asyncio.gather(*(store.put_secret(n, n.encode()) for n in names))
    found = await store.get_secrets(names)
    assert len(found) == 1200 and found["S1199"] == b"S1199"


async def test_lifecycle(db_path: Path) -> None:
    store = SqliteJobStore(db_path)
    with pytest.raises(StoreError, match="not open"):
        await store.get_job("x")
    await store.open()
    await store.open()  # idempotent
    await store.create_job(make_job("x"))
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        await store.get_job("x")
    with pytest.raises(StoreError, match="closed"):
        await store.create_job(make_job("y"))
    await store.open()  # a closed store may be opened again
    assert (await store.get_job("x")).id == "x"
    await store.close()


async def test_close_drains_pending_operations(db_path: Path) -> None:
    store = SqliteJobStore(db_path)
    await store.open()
    pending = [asyncio.ensure_future(store.create_job(make_job(f"d{i}"))) for i in range(100)]
    await asyncio.sleep(0)  # let every create_job enqueue its operation
    await store.close()
    assert all(p.done() and p.exception() is None for p in pending)


async def test_newer_schema_version_refused(db_path: Path) -> None:
    store = SqliteJobStore(db_path)
    await store.open()
    await store.close()
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (99,))
    with pytest.raises(StoreError, match="schema version 99"):
        await store.open()
    with pytest.raises(StoreError):
        await store.get_job("x")
    await store.close()


async def test_corrupt_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database" * 100)
    store = SqliteJobStore(path)
    with pytest.raises(StoreError, match=r"junk\.db"):
        await store.open()


async def test_locked_database_becomes_store_error(db_path: Path) -> None:
    store = SqliteJobStore(db_path, busy_timeout_ms=50)
    await store.open()
    try:
        with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
            results = await asyncio.gather(
                store.create_job(make_job("l1")),
                store.create_job(make_job("l2")),
                return_exceptions=True,
            )
            other.execute("ROLLBACK")
        assert all(isinstance(r, StoreError) for r in results)
        assert "locked" in str(results[0])
        # The store recovers once the lock is gone, and nothing of the failed batch was kept.
        await store.create_job(make_job("l1"))
        assert [j.id for j in await store.jobs_in_states({Q})] == ["l1"]
    finally:
        await store.close()


async def test_disk_full_becomes_store_error(db_path: Path) -> None:
    store = SqliteJobStore(db_path)
    await store.open()
    await store.create_job(make_job("small"))
    wal = db_path.with_name(db_path.name + "-wal")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # Python ignores SIGXFSZ, so writes past the limit fail with EFBIG, like a full disk.
    resource.setrlimit(resource.RLIMIT_FSIZE, (wal.stat().st_size + 64 * 1024, hard))
    try:
        with pytest.raises(StoreError) as failure:
            await store.create_job(Job(id="huge", spec=JobSpec(command="z" * 500_000)))
        assert "failed: disk I/O error (SQLITE_IOERR" in str(failure.value)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    try:
        assert [j.id for j in await store.jobs_in_states({Q})] == ["small"]
        await store.create_job(Job(id="huge", spec=JobSpec(command="z" * 500_000)))
        assert len((await store.get_job("huge")).spec.command) == 500_000  # room again
    finally:
        await store.close()
