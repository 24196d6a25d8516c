"""Surviving failures: dropped agent streams, resumed sessions and server restarts.

A dropped stream does not lose its worker at once: the session waits `grace_s` for the agent to
reconnect with its resume token; back in time, its jobs go on untouched; past it, the worker
is lost and its jobs are settled by the retry policy (the agent kills them itself at the same
deadline). After a server restart, agents that reconnect get their jobs back from the store;
jobs whose worker does not return within the grace period are settled the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from hodei._proto.hodei.v1 import worker_pb2 as pb
from hodei.domain.jobs import ACTIVE, Job
from hodei.domain.scheduling import reserve
from hodei.errors import HodeiError, NotFoundError
from hodei.server.core.background import Background
from hodei.server.core.scheduler import Scheduler
from hodei.server.core.workers import HeldJob, WorkerRegistry, WorkerSession

log = logging.getLogger(__name__)


class Recovery:
    def __init__(self, scheduler: Scheduler, registry: WorkerRegistry, grace_s: float) -> None:
        self.scheduler = scheduler
        self.registry = registry
        self.grace_s = grace_s
        self.expired: set[str] = set()  # session ids declared lost: never resumed
        self._background = Background()
        # Several servers on one store: workers on the others (their jobs are theirs to settle).
        self.workers_elsewhere: Callable[[], Awaitable[set[str]]] = _no_workers

    # ---- a stream ends -------------------------------------------------------------------
    def stream_ended(self, session: WorkerSession) -> None:
        session.close()
        if session.shutdown_sent or session.process_gone:
            self._background.spawn(self.lose(session, "stopped"))
            return
        log.warning(
            "worker %s disconnected; %d job(s) kept for %.0fs while it may reconnect",
            session.id,
            len(session.jobs),
            self.grace_s,
        )
        loop = asyncio.get_running_loop()
        session.grace_timer = loop.call_later(
            self.grace_s,
            lambda: self._background.spawn(self.lose(session, "did not come back in time")),
        )

    def process_exited(self, worker_id: str) -> None:
        """The provider saw the worker's process end: no reason to wait for it."""
        session = self.registry.get(worker_id)
        if session is None:
            return
        session.process_gone = True
        if session.closed:
            self._background.spawn(self.lose(session, "its process exited"))

    async def lose(self, session: WorkerSession, why: str) -> None:
        if session.grace_timer is not None:
            session.grace_timer.cancel()
            session.grace_timer = None
        if self.registry.get(session.id) is not session or not session.closed:
            return  # resumed meanwhile, or already handled
        self.expired.add(session.session_id)
        log.warning("worker %s lost (%s)", session.id, why)
        await self.scheduler.on_worker_lost(session)

    # ---- a stream comes back -------------------------------------------------------------
    async def reattach(self, session: WorkerSession, running: Iterable[pb.RunningJob]) -> None:
        """The same session resumed: requeue what the agent never got, cancel what it should
        not hold, keep the rest untouched."""
        session.reattach()
        held = {(r.job_id, r.attempt) for r in running}
        session.drop_queued_assignments()  # re-decided below from what the agent holds
        for job_id, job in list(session.jobs.items()):
            if (job_id, job.attempt) not in held:
                del session.jobs[job_id]
                await self.scheduler.reports.requeue_unrun(
                    session, job, "its worker never received it"
                )
        for job_id, attempt in held:
            mine = session.jobs.get(job_id)
            if mine is None or mine.attempt != attempt:
                session.send_cancel(self._stale(job_id, attempt))
            elif mine.cancel_sent:  # the first CancelJob may have died with the old stream
                session.send_cancel(self.scheduler.cancel_message(mine))
        self.scheduler.kick()

    async def adopt(self, session: WorkerSession, running: Iterable[pb.RunningJob]) -> None:
        """A session from before a server restart: take back the attempts the store still
        gives to this worker; tell the agent to drop any other."""
        for r in running:
            job = await self._active_job(r.job_id)
            if job and job.worker_id == session.id and job.attempts == r.attempt:
                session.jobs[job.id] = HeldJob(job.id, r.attempt, job)
                reserve(session.view, job.spec)
                log.info("worker %s took back job %s attempt %d", session.id, job.id, r.attempt)
            else:
                session.send_cancel(self._stale(r.job_id, r.attempt))
        self.scheduler.kick()

    async def _active_job(self, job_id: str) -> Job | None:
        try:
            job = await self.scheduler.orch.store.get_job(job_id)
        except NotFoundError:
            return None
        return job if job.state in ACTIVE else None

    @staticmethod
    def _stale(job_id: str, attempt: int) -> pb.CancelJob:
        return pb.CancelJob(
            job_id=job_id,
            attempt=attempt,
            grace_ms=0,
            reason="this attempt is no longer yours (it was requeued or settled)",
        )

    # ---- server start --------------------------------------------------------------------
    async def after_restart(self, provider_prefix: str) -> None:
        """Active jobs from before the restart: those on workers of our own provider are gone
        (the provider's reconcile removed them); others get the grace period to come back."""
        jobs = await self.scheduler.orch.store.jobs_in_states(ACTIVE)
        elsewhere = await self.workers_elsewhere()
        waiting = []
        for job in jobs:
            if job.worker_id in elsewhere:
                continue  # another server's (sharing the store): it watches them
            if job.worker_id and job.worker_id.startswith(provider_prefix):
                await self._settle_orphan(job.id)
            else:
                waiting.append(job.id)
        if waiting:
            log.info("%d job(s) wait up to %.0fs for their workers", len(waiting), self.grace_s)
            self._background.spawn(self._settle_later(waiting))

    async def _settle_later(self, job_ids: list[str]) -> None:
        await asyncio.sleep(self.grace_s)
        for job_id in job_ids:
            await self._settle_orphan(job_id)

    async def _settle_orphan(self, job_id: str) -> None:
        job = await self._active_job(job_id)
        if job is None or self.scheduler.held_job(job.id, job.worker_id) is not None:
            return  # finished or taken back
        try:
            await self.scheduler.reports.settle_lost(
                job, "its worker did not come back after a restart"
            )
        except HodeiError as exc:
            log.warning("could not settle job %s: %s", job_id, exc.message)

    async def stop(self) -> None:
        await self._background.stop()
        for session in self.registry.sessions():
            if session.grace_timer is not None:
                session.grace_timer.cancel()


async def _no_workers() -> set[str]:
    return set()
