"""Fixtures of the contract suites: every test taking `backend` or `store` runs once per store
adapter (see store_backends.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from store_backends import Backend, memory_backend, postgres_backend, sqlite_backend

from hodei.ports import JobStore


@pytest.fixture(params=["sqlite", "postgres", "memory"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return sqlite_backend(tmp_path / "nested" / "hodei.db")
    if request.param == "memory":
        return memory_backend()
    return postgres_backend(request.getfixturevalue("postgres_dsn"))


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[JobStore]:
    s = backend.make()
    await s.open()
    yield s
    await s.close()
