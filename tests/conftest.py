"""Shared test helpers."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from services import require_service

TEST_DATABASE_URL = "postgresql://hodei:hodei@127.0.0.1:5432/hodei_test"


def _admin(url: str, sql: str) -> None:
    """Run one statement on a private loop (asyncio.run would unset pytest-asyncio's loop)."""
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(run())
    finally:
        loop.close()


@pytest.fixture
def postgres_dsn() -> Iterator[str]:
    """A PostgreSQL URL (HODEI_TEST_DATABASE_URL; .ci/services/postgres.sh sets one up) whose
    search_path is a fresh schema, dropped afterwards, so every test starts from nothing."""
    url = os.environ.get("HODEI_TEST_DATABASE_URL") or TEST_DATABASE_URL
    schema = f"hodei_test_{secrets.token_hex(6)}"
    try:
        _admin(url, f"CREATE SCHEMA {schema}")
    except Exception as exc:  # any failure to reach it means the service is not there
        where = url.rpartition("@")[2]
        require_service(
            "postgresql",
            False,
            f"cannot use {where}: {exc} (run .ci/services/postgres.sh as root, or set "
            "HODEI_TEST_DATABASE_URL)",
        )
    yield f"{url}{'&' if '?' in url else '?'}search_path={schema}"
    _admin(url, f"DROP SCHEMA {schema} CASCADE")


WORKER_IMAGE = os.environ.get("HODEI_TEST_WORKER_IMAGE", "hodei-worker:latest")


@pytest.fixture
def engine() -> Iterator[Any]:
    """A Docker SDK client of an engine that has the worker image (HODEI_TEST_WORKER_IMAGE;
    .ci/services/docker.sh starts one and builds it): else skip loudly, or fail in CI."""
    import docker

    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:  # any failure to reach it means the service is not there
        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        require_service(
            "docker", False, f"no Docker engine at {where}: {exc} (run .ci/services/docker.sh)"
        )
    try:
        client.images.get(WORKER_IMAGE)
    except docker.errors.ImageNotFound:
        client.close()
        require_service(
            "docker",
            False,
            f"worker image {WORKER_IMAGE} is missing (scripts/build_worker_image.sh)",
        )
    yield client
    client.close()
