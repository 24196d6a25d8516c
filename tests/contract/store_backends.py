"""The store adapters the contract suites run against (SQLite, PostgreSQL and the in-memory
store), each with raw access to its database for what the port does not expose.

The `backend` and `store` fixtures built on these are in tests/contract/conftest.py.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from hodei.adapters.store import memory, postgres, sqlite
from hodei.adapters.store.common import Migration
from hodei.ports import JobStore


@dataclass
class Backend:
    """One adapter, plus raw access to its database for what the port does not expose."""

    name: str
    make: Callable[..., JobStore]  # keyword arguments: migrations
    migrations: tuple[Migration, ...]
    broken: Callable[[], JobStore]  # a store whose database cannot be used
    version: Callable[[], Awaitable[int]]
    set_version: Callable[[int], Awaitable[None]]
    has_table: Callable[[str], Awaitable[bool]]
    database: bool = True  # False: nothing behind the store (no schema, nothing to break)
    run_sql: Callable[[str], Awaitable[Any]] | None = None  # one statement, on the database


def needs_a_database(backend: Backend, why: str) -> None:
    if not backend.database:
        pytest.skip(f"{backend.name}: {why}")


async def reopen(backend: Backend, **kwargs: Any) -> JobStore:
    s = backend.make(**kwargs)
    await s.open()
    return s


def sqlite_backend(path: Path) -> Backend:
    def query(sql: str, *params: Any) -> list[Any]:
        with contextlib.closing(sqlite3.connect(path)) as conn, conn:
            return conn.execute(sql, params).fetchall()

    async def version() -> int:
        return int(query("SELECT value FROM meta WHERE key = 'schema_version'")[0][0])

    async def run_sql(sql: str) -> list[Any]:
        return query(sql)

    async def set_version(number: int) -> None:
        query("UPDATE meta SET value = ? WHERE key = 'schema_version'", number)

    async def has_table(name: str) -> bool:
        return bool(query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", name))

    def broken() -> JobStore:
        junk = path.with_name("junk.db")
        junk.parent.mkdir(parents=True, exist_ok=True)
        junk.write_bytes(b"this is not a database" * 100)
        return sqlite.SqliteJobStore(junk)

    return Backend(
        "sqlite",
        lambda **kw: sqlite.SqliteJobStore(path, **kw),
        sqlite.MIGRATIONS,
        broken,
        version,
        set_version,
        has_table,
        run_sql=run_sql,
    )


def postgres_backend(dsn: str) -> Backend:
    async def query(sql: str, *params: Any) -> list[Any]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(sql, *params))
        finally:
            await conn.close()

    async def version() -> int:
        return int((await query("SELECT max(version) FROM schema_migrations"))[0][0])

    async def set_version(number: int) -> None:
        await query(
            "INSERT INTO schema_migrations (version, description) VALUES ($1, 'test')", number
        )

    async def has_table(name: str) -> bool:
        rows = await query("SELECT to_regclass($1) IS NOT NULL", name)
        return bool(rows[0][0])

    def broken() -> JobStore:  # nothing listens on port 1; the password must not leak
        return postgres.PostgresJobStore("postgresql://hodei:s3cret-pw@127.0.0.1:1/nowhere")

    return Backend(
        "postgres",
        lambda **kw: postgres.PostgresJobStore(dsn, **kw),
        postgres.MIGRATIONS,
        broken,
        version,
        set_version,
        has_table,
        run_sql=query,
    )


def memory_backend() -> Backend:
    # The store object is its own database: each make() is that database opened again, as
    # make() of the others opens the same file or schema again.
    store = memory.MemoryJobStore()

    def make(**kwargs: Any) -> JobStore:
        assert not kwargs, "the in-memory store has no schema to migrate"
        return store

    def no_database(*args: Any) -> Any:
        raise AssertionError("the in-memory store has no database (see needs_a_database)")

    return Backend(
        "memory", make, (), no_database, no_database, no_database, no_database, database=False
    )
