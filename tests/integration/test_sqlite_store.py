"""SqliteJobStore behaviour beyond the JobStore contract (tests/contract/test_job_store.py):
WAL, group commit, lock and disk-full errors, files from before the migration list."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hodei.adapters.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteJobStore
from hodei.domain.jobs import Job, JobSpec, JobState
from hodei.errors import StoreError

Q = JobState.QUEUED


def make_job(job_id: str, **spec: object) -> Job:
    return Job(id=job_id, spec=JobSpec(command="echo hi", **spec), created_at=1000.0)  # type: ignore[arg-type]


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


async def test_group_commit_batches(store: SqliteJobStore) -> None:
    before = store.commits
    created = await asyncio.gather(*(store.create_job(make_job(f"g{i}")) for i in range(2000)))
    commits = store.commits - before
    assert 1 <= commits < 2000
    assert len({job.seq for job in created}) == 2000


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


async def test_file_from_before_the_migration_list_opens(db_path: Path) -> None:
    # Version 1 files were written by a fixed schema and a meta row; they need no step.
    db_path.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        for statement in MIGRATIONS[0].statements:
            conn.execute(statement)
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value NOT NULL)")
        conn.execute("INSERT INTO meta VALUES ('schema_version', 1)")
    store = SqliteJobStore(db_path)
    await store.open()
    try:
        await store.create_job(make_job("new"))
        assert [j.id for j in await store.jobs_in_states({Q})] == ["new"]
    finally:
        await store.close()
