"""Surviving failures: dropped agent streams, resumed sessions and server restarts.

A dropped stream does not lose its worker at once: the session waits `grace_s` for the agent to
reconnect with its resume token; back in time, its jobs go on untouched; past it, the worker
is lost and its jobs are settled by the retry policy as lost to the platform (the agent kills
them itself at the same deadline). After a server restart, agents that reconnect get their
jobs back from the store; jobs whose worker does not return within the grace period are
settled the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Protocol

from hodei.domain.attempts import Failure
from hodei.domain.jobs import ACTIVE, Job
from hodei.domain.scheduling import reserve
from hodei.errors import HodeiError, NotFoundError
from hodei.ports import JobStore
from hodei.server.core.background import Background
from hodei.server.core.control import JobControl
from hodei.server.core.passes import PassSignal
from hodei.server.core.reports import Reports
from hodei.server.core.workers import HeldJob, WorkerRegistry, WorkerSession

log = logging.getLogger(__name__)

STALE = "this attempt is no longer yours (it was requeued or settled)"


class RunningReport(Protocol):
    """An attempt an agent says it holds, when its stream (re)connects."""

    @property
    def job_id(self) -> str: ...
    @property
    def attempt(self) -> int: ...


class WorkersElsewhere(Protocol):
    """Several servers on one store: which workers are connected to the others."""

    async def workers_elsewhere(self) -> set[str]: ...


class Recovery:
    def __init__(
        self,
        registry: WorkerRegistry,
        reports: Reports,
        control: JobControl,
        store: JobStore,
        passes: PassSignal,
        grace_s: float,
        elsewhere: WorkersElsewhere | None = None,
    ) -> None:
        self.registry = registry
        self.reports = reports
        self.control = control
        self.store = store
        self.passes = passes
        self.grace_s = grace_s
        # Workers on the other servers sharing the store (their jobs are theirs to settle).
        self.elsewhere = elsewhere
        self.expired: set[str] = set()  # session ids declared lost: never resumed
        self.reconcile_s = max(1.0, min(30.0, grace_s))
        self._orphans: set[str] = set()  # active jobs no worker held on the last pass
        self._background = Background()

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
        session.reconnect_by = time.time() + self.grace_s  # shown in the workers list
        session.grace_timer = loop.call_later(
            self.grace_s,
            lambda: self._background.spawn(self.lose(session, "did not come back in time")),
        )

    def process_exited(
        self, worker_id: str, why: str = "its process exited", detail: str = ""
    ) -> None:
        """The worker cannot come back (its process ended, or no certificate it could come
        back with is left): no reason to wait for it once its stream is gone. `detail`: what
        the provider said of the end, given in its jobs' reasons."""
        session = self.registry.get(worker_id)
        if session is None:
            return
        session.process_gone = True
        if detail:
            session.gone_why = detail
            why = detail
        if session.closed:
            self._background.spawn(self.lose(session, why))

    async def lose(self, session: WorkerSession, why: str) -> None:
        if session.grace_timer is not None:
            session.grace_timer.cancel()
            session.grace_timer = None
        if self.registry.get(session.id) is not session or not session.closed:
            return  # resumed meanwhile, or already handled
        self.expired.add(session.session_id)
        log.warning("worker %s lost (%s)", session.id, why)
        await self.worker_gone(session)

    async def worker_gone(self, session: WorkerSession) -> None:
        """The worker is gone for good: settle its attempts by the retry policy."""
        session.close()
        self.registry.remove(session)
        held_jobs = list(session.jobs.values())
        session.jobs.clear()
        for held in held_jobs:
            await self.reports.lose(session, held, session.gone_why)
        self.passes.kick()

    # ---- a stream comes back -------------------------------------------------------------
    async def reattach(self, session: WorkerSession, running: Iterable[RunningReport]) -> None:
        """The same session resumed: requeue what the agent never got, cancel what it should
        not hold, keep the rest untouched."""
        session.reattach()
        held = {(r.job_id, r.attempt) for r in running}
        session.channel.drop_assignments()  # re-decided below from what the agent holds
        for job_id, job in list(session.jobs.items()):
            if (job_id, job.attempt) not in held:
                del session.jobs[job_id]
                await self.reports.requeue_unrun(session, job, "its worker never received it")
        for job_id, attempt in held:
            mine = session.jobs.get(job_id)
            if mine is None or mine.attempt != attempt:
                session.drop_attempt(job_id, attempt, STALE)
            elif mine.cancel_sent:  # the first cancel may have died with the old stream
                self.control.stop_held(session, mine, again=True)
        self.passes.kick()

    async def adopt(self, session: WorkerSession, running: Iterable[RunningReport]) -> None:
        """A session from before a server restart: take back the attempts the store still
        gives to this worker; tell the agent to drop any other."""
        for r in running:
            job = await self._active_job(r.job_id)
            if job and job.worker_id == session.id and job.attempts == r.attempt:
                session.jobs[job.id] = HeldJob(job.id, r.attempt, job)
                reserve(session.view, job.spec)
                log.info("worker %s took back job %s attempt %d", session.id, job.id, r.attempt)
            else:
                session.drop_attempt(r.job_id, r.attempt, STALE)
        self.passes.kick()

    async def _active_job(self, job_id: str) -> Job | None:
        try:
            job = await self.store.get_job(job_id)
        except NotFoundError:
            return None
        return job if job.state in ACTIVE else None

    # ---- server start --------------------------------------------------------------------
    async def after_restart(self, provider_prefix: str) -> None:
        """Active jobs from before the restart get the grace period for their workers to come
        back: static agents, and those of our own provider too (its start() adopted the ones
        still alive, which reconnect with their jobs). Jobs not taken back by then are settled."""
        jobs = await self.store.jobs_in_states(ACTIVE)
        elsewhere = await self.elsewhere.workers_elsewhere() if self.elsewhere else set()
        # Not another server's (sharing the store): it watches those.
        waiting = [job for job in jobs if job.worker_id not in elsewhere]
        if waiting:
            own = sum(1 for job in waiting if (job.worker_id or "").startswith(provider_prefix))
            log.info(
                "%d job(s) (%d on %s workers) wait up to %.0fs for their workers",
                len(waiting),
                own,
                provider_prefix.rstrip("-"),
                self.grace_s,
            )
            self._background.spawn(self._settle_later([job.id for job in waiting]))

    async def _settle_later(self, job_ids: list[str]) -> None:
        await asyncio.sleep(self.grace_s)
        for job_id in job_ids:
            await self._settle_orphan(job_id)

    async def _settle_orphan(
        self,
        job_id: str,
        why: str = "its worker did not come back after a restart",
        failure: Failure = Failure.SERVER_RESTART,
    ) -> None:
        job = await self._active_job(job_id)
        if job is None or self.registry.held(job.id, job.worker_id) is not None:
            return  # finished or taken back
        try:
            await self.reports.settle_lost(job, why, failure)
        except HodeiError as exc:
            log.warning("could not settle job %s: %s", job_id, exc.message)

    # ---- reconciliation ------------------------------------------------------------------
    def start(self) -> None:
        """Reconcile now and then: a job never stays active with no worker holding it."""
        self._background.spawn(self._reconcile_loop())

    async def _reconcile_loop(self) -> None:
        await asyncio.sleep(max(self.grace_s, self.reconcile_s))  # restarted workers first
        while True:
            try:
                await self.reconcile()
            except HodeiError as exc:
                log.warning("reconciliation of active jobs failed: %s", exc.message)
            await asyncio.sleep(self.reconcile_s)

    async def reconcile(self) -> None:
        """Settle, by the retry policy, the active jobs no worker holds, here or on another
        server sharing the store, on two passes in a row (a job between its store write and
        its worker's bookkeeping is held again by the next pass)."""
        jobs = await self.store.jobs_in_states(ACTIVE)
        elsewhere = await self.elsewhere.workers_elsewhere() if self.elsewhere else set()
        orphans = {
            job.id
            for job in jobs
            if job.worker_id not in elsewhere and self.registry.held(job.id, job.worker_id) is None
        }
        seen_before, self._orphans = self._orphans, orphans
        for job_id in sorted(orphans & seen_before):
            log.warning("job %s is active but no worker holds it: settling it", job_id)
            await self._settle_orphan(job_id, "no worker holds it any more", Failure.WORKER_LOST)

    async def stop(self) -> None:
        await self._background.stop()
        for session in self.registry.sessions():
            if session.grace_timer is not None:
                session.grace_timer.cancel()
