"""Time to list page 1 and page 50 of 100,000 jobs, newest first, with and without filters.

    python bench/list_jobs_filters.py [--jobs N] [--postgres URL]

The store is SQLite (a fresh file in a temporary directory), or PostgreSQL with --postgres (a
fresh schema, dropped at the end). The jobs: 90% succeeded, 5% failed, 5% queued; names
"build-0".."build-9", one in a hundred "Nightly release"; a label team=a..e, one job in a
thousand also rare=yes; every thousandth job starts a pipeline run of 20 step jobs. A page is
100 jobs; page 50 is read through the cursors of the 49 before it and the figure is that one
request. Each figure is the best of 5 runs. The query plan of each filter is printed below
its figures: a page must walk an index newest first (SQLite: no "TEMP B-TREE" for the order,
except for a run's few jobs found by the id index).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from hodei.adapters.store.common import page_limit
from hodei.adapters.store.pg_common import page_query as pg_page_query
from hodei.adapters.store.pg_schema import SELECT as PG_SELECT
from hodei.adapters.store.pg_schema import job_conditions as pg_conditions
from hodei.adapters.store.sqlite import SqliteJobStore, jobs_page_query
from hodei.domain.job_filter import job_filter
from hodei.domain.jobs import Job, JobSpec, JobState
from hodei.ports import JobStore

RUNS = 5
PAGE = 100
BATCH = 1000


def run_id(n: int) -> str:
    return f"r{n:017x}"


def make_jobs(count: int) -> list[Job]:
    jobs = []
    for n in range(count):
        # Every thousandth job starts a run's 20 steps.
        job_id = f"{run_id(n // 1000)}.{n % 1000}.1" if n % 1000 < 20 else f"j{n:08d}"
        state = JobState.FAILED if n % 20 == 1 else JobState.QUEUED if n % 20 == 2 else None
        labels = {"team": "abcde"[n % 5]}
        if n % 1000 == 500:
            labels["rare"] = "yes"
        name = "Nightly release" if n % 100 == 37 else f"build-{n % 10}"
        spec = JobSpec(command="echo hi", name=name, labels=labels)
        jobs.append(
            Job(
                id=job_id,
                spec=spec,
                state=state or JobState.SUCCEEDED,
                created_at=1000.0 + n,
                attempts=1,
                reason="",
            )
        )
    return jobs


CASES: list[tuple[str, dict[str, Any]]] = [
    ("no filter", {}),
    ("state=queued (5%)", {"state": JobState.QUEUED}),
    ("name=build (99%)", {"name": "BUILD"}),
    ("name=nightly (1%)", {"name": "nightly"}),
    ("label team=a (20%)", {"labels": {"team": "a"}}),
    ("label rare=yes (0.1%)", {"labels": {"rare": "yes"}}),
    (
        "state=failed + team=b + name=build",
        {"state": JobState.FAILED, "labels": {"team": "b"}, "name": "build"},
    ),
    ("pipeline (20 jobs)", {"pipeline": run_id(42)}),
]


async def best_ms(store: JobStore, kwargs: dict[str, Any], cursor: int | None) -> float:
    best = float("inf")
    for _ in range(RUNS):
        started = time.perf_counter()
        await store.list_jobs(limit=PAGE, cursor=cursor, **kwargs)
        best = min(best, time.perf_counter() - started)
    return best * 1000


async def cursor_of_page(
    store: JobStore, kwargs: dict[str, Any], page: int
) -> tuple[int, int | None]:
    """(page number, its cursor) of page `page`, or of the last page if there are fewer."""
    cursor = None
    for number in range(1, page):
        _, after = await store.list_jobs(limit=PAGE, cursor=cursor, **kwargs)
        if after is None:
            return number, cursor
        cursor = after
    return page, cursor


def split(kwargs: dict[str, Any]) -> tuple[Any, ...]:
    return (
        kwargs.get("state"),
        kwargs.get("name"),
        kwargs.get("labels"),
        kwargs.get("pipeline"),
    )


def sqlite_plan(path: Path, kwargs: dict[str, Any]) -> str:
    sql, params = jobs_page_query(job_filter(*split(kwargs)), 12345, PAGE)
    with sqlite3.connect(path) as conn:
        rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
    return "; ".join(row[-1] for row in rows)


async def postgres_plan(url: str, schema: str, kwargs: dict[str, Any]) -> str:
    import asyncpg

    conditions = pg_conditions(job_filter(*split(kwargs)))
    sql, params = pg_page_query(PG_SELECT, conditions, 12345, page_limit(PAGE))
    conn = await asyncpg.connect(url, server_settings={"search_path": schema})
    try:
        rows = await conn.fetch(f"EXPLAIN {sql}", *params)
    finally:
        await conn.close()
    return "; ".join(r[0].strip() for r in rows if "->" in r[0] or r is rows[0])


async def fill(store: JobStore, count: int) -> float:
    jobs = make_jobs(count)
    started = time.perf_counter()
    for start in range(0, len(jobs), BATCH):
        await store.create_jobs(jobs[start : start + BATCH])
    return time.perf_counter() - started


async def measure(store: JobStore, plan: Any) -> None:
    print(f"{'filter':<38} {'page 1':>9} {'page 50':>9}   (or the last page)")
    for label, kwargs in CASES:
        first = await best_ms(store, kwargs, None)
        number, cursor = await cursor_of_page(store, kwargs, 50)
        later = await best_ms(store, kwargs, cursor)
        last = "" if number == 50 else f"   (page {number})"
        print(f"{label:<38} {first:7.2f}ms {later:7.2f}ms{last}")
        print(f"    plan: {await plan(kwargs)}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--postgres", metavar="URL", help="PostgreSQL instead of SQLite")
    args = parser.parse_args()
    if args.postgres:
        await bench_postgres(args.postgres, args.jobs)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        store = SqliteJobStore(path)
        await store.open()
        try:
            took = await fill(store, args.jobs)
            print(f"SQLite, {args.jobs} jobs stored in {took:.1f}s")

            async def plan(kwargs: dict[str, Any]) -> str:
                return sqlite_plan(path, kwargs)

            await measure(store, plan)
        finally:
            await store.close()


async def bench_postgres(url: str, count: int) -> None:
    import asyncpg

    from hodei.adapters.store.postgres import PostgresJobStore

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(url)
    await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.close()
    sep = "&" if "?" in url else "?"
    store = PostgresJobStore(f"{url}{sep}search_path={schema}")
    await store.open()
    try:
        took = await fill(store, count)
        conn = await asyncpg.connect(url, server_settings={"search_path": schema})
        await conn.execute("ANALYZE jobs")
        await conn.close()
        print(f"PostgreSQL, {count} jobs stored in {took:.1f}s")

        async def plan(kwargs: dict[str, Any]) -> str:
            return await postgres_plan(url, schema, kwargs)

        await measure(store, plan)
    finally:
        await store.close()
        conn = await asyncpg.connect(url)
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
