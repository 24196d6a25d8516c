"""Joins this server to the others sharing its PostgreSQL store.

Local job events and log growth go out as hints; the others' come in and are applied from the
store (a job event re-reads the job, a log event wakes followers of a log on the shared log
directory). Every server watches the others' heartbeats: the active jobs of one silent for
longer than the worker grace period are settled by the retry policy (compare-and-swap in the
store lets exactly one server do it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from hodei.domain.attempts import Failure
from hodei.domain.cluster import ClusterEvent, EventKind
from hodei.domain.jobs import ACTIVE
from hodei.errors import HodeiError, NotFoundError
from hodei.ports import Cluster, JobStore
from hodei.server.core.background import Background
from hodei.server.core.bus import (
    CancelElsewhere,
    EventBus,
    JobChanged,
    LogGrew,
    WorkerConnected,
)
from hodei.server.core.control import JobControl
from hodei.server.core.loghub import LogHub
from hodei.server.core.reports import Reports
from hodei.server.core.workers import WorkerRegistry
from hodei.server.security.api_auth import ApiAuth, TokenRevoked

log = logging.getLogger(__name__)


class ClusterLink:
    def __init__(
        self,
        cluster: Cluster,
        store: JobStore,
        bus: EventBus,
        hub: LogHub,
        reports: Reports,
        control: JobControl,
        registry: WorkerRegistry,
        auth: ApiAuth,
        grace_s: float,
    ) -> None:
        self.cluster = cluster
        self.store = store
        self.bus = bus
        self.hub = hub
        self.reports = reports
        self.control = control
        self.registry = registry
        self.auth = auth
        self.grace_s = grace_s
        self._background = Background()
        self._sweeper: asyncio.Task[None] | None = None
        self._logs: dict[tuple[str, int], int] = {}  # log growth not yet sent, coalesced
        self._logs_flush: asyncio.Handle | None = None

    @property
    def instance_id(self) -> str:
        return self.cluster.instance_id

    async def start(self) -> None:
        bus = self.bus
        bus.subscribe(JobChanged, self._local_job)
        bus.subscribe(LogGrew, self._local_log)
        bus.subscribe(WorkerConnected, self._worker_added)
        bus.subscribe(CancelElsewhere, self._remote_cancel)
        bus.subscribe(TokenRevoked, self._revoked)
        await self.cluster.start(self._received, self._resync)
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="cluster-sweep")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self._background.stop()
        self._send_logs()
        await self.cluster.stop()

    # -- outgoing

    def _local_job(self, event: JobChanged) -> None:
        if not event.remote:
            self.cluster.publish(ClusterEvent(EventKind.JOB, self.instance_id, event.job.id))

    def _local_log(self, event: LogGrew) -> None:
        self._logs[(event.job_id, event.attempt)] = event.size
        if self._logs_flush is None:  # one event per log per loop turn, not one per chunk
            self._logs_flush = asyncio.get_running_loop().call_soon(self._send_logs)

    def _send_logs(self) -> None:
        self._logs_flush = None
        logs, self._logs = self._logs, {}
        for (job_id, attempt), size in logs.items():
            self.cluster.publish(
                ClusterEvent(EventKind.LOG, self.instance_id, job_id, attempt, size)
            )

    def _remote_cancel(self, event: CancelElsewhere) -> None:
        self.cluster.publish(ClusterEvent(EventKind.CANCEL, self.instance_id, event.job_id))

    def _revoked(self, event: TokenRevoked) -> None:
        self.cluster.publish(ClusterEvent(EventKind.TOKEN, self.instance_id, event.token_id))

    def _worker_added(self, event: WorkerConnected) -> None:
        self._background.spawn(self.cluster.worker_connected(event.worker_id))

    # -- incoming

    def _received(self, event: ClusterEvent) -> None:
        if event.kind is EventKind.JOB:
            self._background.spawn(self._job_changed(event.subject))
        elif event.kind is EventKind.LOG:
            self.hub.remote_appended(event.subject, event.attempt, event.size)
        elif event.kind is EventKind.CANCEL:
            self._background.spawn(self._cancel_here(event.subject))
        elif event.kind is EventKind.TOKEN:
            self.auth.forget(event.subject)

    async def _job_changed(self, job_id: str) -> None:
        try:
            job = await self.store.get_job(job_id)
        except NotFoundError:
            return
        except HodeiError as exc:
            log.warning("job %s changed on another server, cannot read it: %s", job_id, exc)
            return
        self.bus.publish(JobChanged(job, None, remote=True))

    async def _cancel_here(self, job_id: str) -> None:
        """Another server cancelled a job (in the store); if one of this server's workers runs
        it, kill it there (its late result is then refused by the store's compare-and-swap)."""
        try:
            job = await self.store.get_job(job_id)
        except HodeiError as exc:
            log.info("cancel of %s from another server not applied: %s", job_id, exc)
            return
        found = self.registry.held(job_id, job.worker_id)
        if found is not None:
            self.control.stop_held(*found)

    def _resync(self) -> None:
        """Events were missed while not listening: take the queue from the store again, and
        read every token again (a revocation may have been among them)."""
        self.auth.forget_all()
        self._background.spawn(self._requeue_from_store())

    async def _requeue_from_store(self) -> None:
        for job in await self.store.pending_jobs():
            self.bus.publish(JobChanged(job, None, remote=True))

    # -- dead servers

    async def _sweep_loop(self) -> None:
        interval = max(0.5, min(self.grace_s / 3, 10.0))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except HodeiError as exc:
                log.warning("sweep of silent servers failed: %s", exc)
            except Exception:
                log.exception("sweep of silent servers failed")

    async def sweep(self) -> None:
        """Settle the active jobs of servers silent for longer than the grace period."""
        for server_id, job_ids in (await self.cluster.orphaned_jobs(self.grace_s)).items():
            for job_id in job_ids:
                job = await self.store.get_job(job_id)
                if job.state in ACTIVE:
                    log.warning("server %s is gone: settling job %s", server_id, job_id)
                    await self.reports.settle_lost(
                        job, f"server {server_id} stopped answering", Failure.SERVER_LOST
                    )
            await self.cluster.forget_server(server_id)
