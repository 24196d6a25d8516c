"""The PostgreSQL cluster link against a real database: events between two servers, worker
homes, and finding the jobs of a server that went silent."""

from __future__ import annotations

import asyncio

import asyncpg

from hodei.adapters.cluster.postgres import PostgresCluster
from hodei.adapters.store.postgres import PostgresJobStore
from hodei.domain.cluster import ClusterEvent, EventKind
from hodei.domain.jobs import Job, JobSpec, JobState


async def test_two_servers_hear_each_other_and_find_a_silent_ones_jobs(postgres_dsn: str) -> None:
    store = PostgresJobStore(postgres_dsn)
    await store.open()  # the schema, cluster tables included
    a, b = PostgresCluster(postgres_dsn, "srv-a"), PostgresCluster(postgres_dsn, "srv-b")
    heard: dict[str, list[ClusterEvent]] = {"a": [], "b": []}
    try:
        await a.start(heard["a"].append, lambda: None)
        await b.start(heard["b"].append, lambda: None)
        a.publish(ClusterEvent(EventKind.JOB, "srv-a", "j1"))
        a.publish(ClusterEvent(EventKind.LOG, "srv-a", "j1", attempt=1, size=42))
        for _ in range(200):
            if len(heard["b"]) == 2:
                break
            await asyncio.sleep(0.01)
        assert heard["b"] == [
            ClusterEvent(EventKind.JOB, "srv-a", "j1"),
            ClusterEvent(EventKind.LOG, "srv-a", "j1", attempt=1, size=42),
        ]
        assert heard["a"] == []  # a server ignores its own events

        await b.worker_connected("w-b")
        await a.worker_connected("w-a")
        assert await a.workers_elsewhere() == {"w-b"}
        job = await store.create_job(Job("j1", JobSpec(command="true")))
        await store.transition(job.id, {JobState.QUEUED}, JobState.ASSIGNED, {"worker_id": "w-b"})
        assert await a.orphaned_jobs(grace_s=60) == {}  # b is alive
        conn = await asyncpg.connect(postgres_dsn)
        try:  # b falls silent (its heartbeat an hour old)
            await conn.execute(
                "UPDATE cluster_servers SET heartbeat_at = heartbeat_at - 3600 WHERE id = 'srv-b'"
            )
        finally:
            await conn.close()
        assert await a.orphaned_jobs(grace_s=60) == {"srv-b": ["j1"]}
        await a.forget_server("srv-b")
        assert await a.orphaned_jobs(grace_s=60) == {}
        assert await a.workers_elsewhere() == set()
    finally:
        await a.stop()
        await b.stop()
        await store.close()
