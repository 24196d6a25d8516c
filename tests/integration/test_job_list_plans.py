"""list_jobs pages with filters walk an index newest first: the query plans, on SQLite and on
PostgreSQL (with 100,000 jobs and fresh statistics, as the planner chooses by them). Only a
pipeline run's few jobs are read through the id index and sorted."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from hodei.adapters.store.common import page_limit
from hodei.adapters.store.pg_common import page_query
from hodei.adapters.store.pg_schema import SELECT, job_conditions
from hodei.adapters.store.postgres import PostgresJobStore
from hodei.adapters.store.sqlite import SqliteJobStore, jobs_page_query
from hodei.domain.job_filter import JobFilter, job_filter
from hodei.domain.jobs import JobState

RUN = "r0000000000000002a"
WALKS: list[dict[str, Any]] = [
    {},
    {"state": JobState.QUEUED},
    {"name": "build"},
    {"labels": {"team": "a"}},
    {"labels": {"team": "a", "app.kubernetes.io/name": "api"}},
    {"state": JobState.FAILED, "name": "x", "labels": {"team": "b"}},
]


def filters(kwargs: dict[str, Any]) -> JobFilter:
    return job_filter(
        kwargs.get("state"), kwargs.get("name"), kwargs.get("labels"), kwargs.get("pipeline")
    )


@pytest.mark.parametrize("kwargs", WALKS)
@pytest.mark.parametrize("cursor", [None, 5000])
async def test_sqlite_pages_walk_an_index(
    tmp_path: Path, kwargs: dict[str, Any], cursor: int | None
) -> None:
    path = tmp_path / "hodei.db"
    store = SqliteJobStore(path)
    await store.open()
    await store.close()
    sql, params = jobs_page_query(filters(kwargs), cursor, 100)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        plan = " | ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "TEMP B-TREE" not in plan, plan
    if "state" in kwargs:
        assert "USING INDEX jobs_state_seq" in plan, plan
    else:  # the table itself, in seq order (its rowid): from the cursor on, or from the end
        assert plan in ("SCAN jobs", "SEARCH jobs USING INTEGER PRIMARY KEY (rowid<?)"), plan


@pytest.mark.parametrize("cursor", [None, 5000])
async def test_sqlite_a_run_is_an_id_range(tmp_path: Path, cursor: int | None) -> None:
    path = tmp_path / "hodei.db"
    store = SqliteJobStore(path)
    await store.open()
    await store.close()
    sql, params = jobs_page_query(job_filter(pipeline=RUN), cursor, 100)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        plan = " | ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "sqlite_autoindex_jobs_1 (id>? AND id<?)" in plan, plan


@pytest.fixture
async def pg_jobs(postgres_dsn: str) -> Any:
    """A PostgreSQL schema with 100,000 jobs (written in SQL: the store would take longer),
    analyzed; a connection to it."""
    store = PostgresJobStore(postgres_dsn)
    await store.open()  # the schema, migrated
    await store.close()
    conn = await asyncpg.connect(postgres_dsn)
    await conn.execute(
        """INSERT INTO jobs (id, state, priority, created_at, attempts, reason, spec)
        SELECT CASE WHEN n % 1000 < 20 THEN 'r' || lpad(to_hex(n / 1000), 17, '0') || '.'
                    || (n % 1000) || '.1' ELSE 'j' || n END,
               CASE WHEN n % 20 = 2 THEN 'queued' ELSE 'succeeded' END, 0, n, 1, '',
               '{"command":"echo","name":"build-' || (n % 10) || '","labels":{"team":"'
               || chr(97 + n % 5) || '"}}'
        FROM generate_series(0, 99999) AS n"""
    )
    await conn.execute("ANALYZE jobs")
    try:
        yield conn
    finally:
        await conn.close()


async def pg_plan(conn: asyncpg.Connection, wanted: JobFilter, cursor: int | None) -> str:
    sql, params = page_query(SELECT, job_conditions(wanted), cursor, page_limit(100))
    # A generic plan too: asyncpg prepares statements, and PostgreSQL may settle on one.
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    generic = await conn.fetch(f"EXPLAIN {sql}", *params)
    await conn.execute("RESET plan_cache_mode")
    custom = await conn.fetch(f"EXPLAIN {sql}", *params)
    return " | ".join(row[0] for row in [*generic, *custom])


@pytest.mark.parametrize("cursor", [None, 50_000])
async def test_postgres_pages_walk_an_index(
    pg_jobs: asyncpg.Connection, cursor: int | None
) -> None:
    for kwargs in WALKS:
        plan = await pg_plan(pg_jobs, filters(kwargs), cursor)
        assert "Sort" not in plan and "Seq Scan" not in plan, (kwargs, plan)
        assert "Index Scan Backward" in plan, (kwargs, plan)


@pytest.mark.parametrize("cursor", [None, 50_000])
async def test_postgres_a_run_is_read_by_its_id_prefix(
    pg_jobs: asyncpg.Connection, cursor: int | None
) -> None:
    for wanted in [
        job_filter(pipeline=RUN),
        job_filter(JobState.QUEUED, "build", {"team": "a"}, RUN),
    ]:
        plan = await pg_plan(pg_jobs, wanted, cursor)
        assert "jobs_id_prefix" in plan and "Seq Scan" not in plan, plan
