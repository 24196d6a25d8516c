"""Several Hodei servers on one PostgreSQL database: events with LISTEN/NOTIFY, liveness with
a heartbeat row per server, and which server each worker is connected to.

Events are small JSON payloads on one channel; every server listens and ignores its own. They
are hints, never the truth: a server receiving "job X changed" reads job X from the store. A
NOTIFY is delivered only to servers listening when it commits, so a server re-reads the queue
from the store when its listening connection comes back after a drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from hodei.adapters.store.common import redact_url
from hodei.domain.cluster import ClusterEvent, decode_event, encode_event
from hodei.errors import StoreError

log = logging.getLogger(__name__)

CHANNEL = "hodei_events"  # then "_<schema>": databases shared by several Hodei schemas
MAX_BATCH = 500
_NOTIFY_MANY = "SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload"
_NOW = "extract(epoch FROM clock_timestamp())"
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class PostgresCluster:
    """`start(on_event)` before use; `stop()` when done. `on_event` runs in the event loop."""

    def __init__(
        self,
        dsn: str,
        instance_id: str,
        *,
        heartbeat_s: float = 2.0,
    ) -> None:
        self.dsn = dsn
        self.instance_id = instance_id
        self.heartbeat_s = heartbeat_s
        self._where = f"cluster on {redact_url(dsn)}"
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._on_event: Callable[[ClusterEvent], None] = lambda e: None
        self._on_reconnect: Callable[[], None] = lambda: None
        self._outbox: list[str] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.channel = CHANNEL

    async def start(
        self, on_event: Callable[[ClusterEvent], None], on_reconnect: Callable[[], None]
    ) -> None:
        """Listen, announce this server and keep its heartbeat. `on_reconnect` runs when the
        listening connection came back after a drop (events in between were missed)."""
        self._on_event, self._on_reconnect = on_event, on_reconnect
        try:
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2)
            schema = await self._pool.fetchval("SELECT current_schema()")
            self.channel = f"{CHANNEL}_{schema}"[:63]  # identifiers are at most 63 bytes
            await self._listen()
            await self.beat()
        except _DB_ERRORS as exc:
            await self.stop()
            raise StoreError(f"{self._where}: cannot start: {exc}") from exc
        self._tasks = [
            asyncio.create_task(self._flush_loop(), name="cluster-notify"),
            asyncio.create_task(self._heartbeat_loop(), name="cluster-heartbeat"),
        ]

    async def _listen(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        conn.add_termination_listener(self._listener_lost)
        await conn.add_listener(self.channel, self._received)
        self._listener = conn

    def _listener_lost(self, conn: asyncpg.Connection) -> None:
        if not self._closing:
            log.warning("%s: listening connection lost; reconnecting", self._where)
            self._tasks.append(asyncio.create_task(self._relisten()))

    async def _relisten(self) -> None:
        delay = 0.2
        while not self._closing:
            try:
                await self._listen()
            except _DB_ERRORS as exc:
                log.warning("%s: cannot listen again (%s); retrying", self._where, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._on_reconnect()
            return

    def _received(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        try:
            event = decode_event(payload)
        except ValueError as exc:
            log.warning("%s: ignored a malformed event: %s", self._where, exc)
            return
        if event.origin != self.instance_id:
            self._on_event(event)

    # -- sending

    def publish(self, event: ClusterEvent) -> None:
        """Queue an event for the other servers (sent in batches, in order)."""
        self._outbox.append(encode_event(event))
        self._wake.set()

    async def _flush_loop(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        while self._outbox and self._pool is not None:
            batch, self._outbox = self._outbox[:MAX_BATCH], self._outbox[MAX_BATCH:]
            try:
                await self._pool.execute(_NOTIFY_MANY, self.channel, batch)
            except _DB_ERRORS as exc:
                # Hints only: a lost event delays another server, the store stays right.
                log.warning("%s: %d event(s) not sent: %s", self._where, len(batch), exc)

    # -- liveness and worker homes

    async def beat(self) -> None:
        assert self._pool is not None
        # The database's clock, not ours: servers on hosts whose clocks differ must not take
        # each other for dead.
        await self._pool.execute(
            f"INSERT INTO cluster_servers (id, heartbeat_at) VALUES ($1, {_NOW}) "
            "ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
            self.instance_id,
        )

    async def _heartbeat_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self.beat()
            except _DB_ERRORS as exc:
                log.warning("%s: heartbeat not stored: %s", self._where, exc)

    async def worker_connected(self, worker_id: str) -> None:
        """This server now holds `worker_id`'s stream (its jobs are this server's to watch)."""
        assert self._pool is not None
        try:
            await self._pool.execute(
                "INSERT INTO cluster_workers (worker_id, server_id) VALUES ($1, $2) "
                "ON CONFLICT (worker_id) DO UPDATE SET server_id = excluded.server_id",
                worker_id,
                self.instance_id,
            )
        except _DB_ERRORS as exc:
            log.warning("%s: worker %s not recorded: %s", self._where, worker_id, exc)

    async def workers_elsewhere(self) -> set[str]:
        assert self._pool is not None
        rows = await self._pool.fetch(
            "SELECT worker_id FROM cluster_workers WHERE server_id <> $1", self.instance_id
        )
        return {row["worker_id"] for row in rows}

    async def orphaned_jobs(self, grace_s: float) -> dict[str, list[str]]:
        """Servers silent for longer than `grace_s` -> ids of the active jobs of their workers."""
        assert self._pool is not None
        rows = await self._pool.fetch(
            "SELECT s.id, j.id AS job_id FROM cluster_servers s "
            "LEFT JOIN cluster_workers w ON w.server_id = s.id "
            "LEFT JOIN jobs j ON j.worker_id = w.worker_id "
            "AND j.state IN ('assigned', 'running') "
            f"WHERE s.id <> $1 AND s.heartbeat_at < {_NOW} - $2",
            self.instance_id,
            float(grace_s),
        )
        found: dict[str, list[str]] = {}
        for row in rows:
            jobs = found.setdefault(row["id"], [])
            if row["job_id"] is not None:
                jobs.append(row["job_id"])
        return found

    async def forget_server(self, server_id: str) -> None:
        """A dead server whose jobs are settled: drop it and its workers' rows."""
        assert self._pool is not None
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM cluster_workers WHERE server_id = $1", server_id)
            await conn.execute("DELETE FROM cluster_servers WHERE id = $1", server_id)

    async def stop(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(*_DB_ERRORS):
            await self.flush()
        if self._listener is not None:
            with contextlib.suppress(*_DB_ERRORS):
                await asyncio.wait_for(self._listener.close(), 5)
        if self._pool is not None:
            with contextlib.suppress(*_DB_ERRORS):
                await asyncio.wait_for(self._pool.close(), 5)
        self._pool = self._listener = None
