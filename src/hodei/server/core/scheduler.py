"""Scheduler: an event-driven loop over the queue of pending jobs (job_queue.JobQueue).

A pass runs whenever something changes (a job queued, a worker registered or freed a slot);
there is no polling sleep. Each pass places jobs in priority order on a snapshot of the workers
(domain.scheduling.place), reserves the slot at once, then dispatches (dispatch.Dispatcher);
jobs no worker can take ask the provisioner for workers. What agents report on their jobs is
handled by reports.Reports; user actions (cancel, retry) are here.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable

from hodei._proto.hodei.v1 import worker_pb2 as pb
from hodei.domain.jobs import Job, JobSpec, JobState
from hodei.domain.scheduling import Placement, Policy, place, reserve, unschedulable
from hodei.errors import ConflictError
from hodei.server.core.background import Background
from hodei.server.core.bus import JobChanged
from hodei.server.core.dispatch import Dispatcher
from hodei.server.core.job_queue import JobQueue, Shape
from hodei.server.core.loghub import LogHub
from hodei.server.core.orchestrator import Orchestrator
from hodei.server.core.reports import Reports
from hodei.server.core.workers import HeldJob, WorkerRegistry, WorkerSession
from hodei.server.security.audit import Auditor

log = logging.getLogger(__name__)

Demand = Callable[[list[Job]], str | None]  # jobs waiting for capacity -> reason text
MAX_PLACED_PER_PASS = 128  # then yield, so log fan-out and gRPC reads interleave with a burst


class Scheduler:
    def __init__(
        self,
        orchestrator: Orchestrator,
        registry: WorkerRegistry,
        hub: LogHub,
        cancel_grace_s: float = 5.0,
        policy: Policy = Policy.SPREAD,
        aging_s: float = 60.0,
        retry_backoff_s: float = 1.0,
    ) -> None:
        self.orch = orchestrator
        self.registry = registry
        self.hub = hub
        self.cancel_grace_ms = int(cancel_grace_s * 1000)
        self.policy = policy
        # Several servers on one store (server.core.cluster): tell the others to cancel a job whose
        # worker is theirs.
        self.remote_cancel: Callable[[str], None] | None = None
        self._delayed: dict[str, asyncio.TimerHandle] = {}  # retries waiting out a backoff
        self.ceiling: Callable[[JobSpec], str | None] = lambda spec: "no worker can be provisioned"
        self.demand: Demand = lambda jobs: None
        # The provisioner's answers without listing jobs (see Provisioner.can_grow/note/fits).
        self.can_grow: Callable[[], bool] = lambda: True
        self.note: Callable[[int], str | None] = lambda fitting: None
        self.fits: Callable[[dict[str, str]], bool] = lambda labels: True
        self.queue = JobQueue(aging_s)
        self._starved = False  # the last pass left jobs waiting for capacity
        self._note: str | None = None  # demand()'s answer in that pass, when it was asked
        self._note_known = False
        self._dirty = asyncio.Event()
        self._background = Background()
        self._loop_task: asyncio.Task[None] | None = None
        self.reports = Reports(
            orchestrator, hub, self.kick, self._background.spawn, retry_backoff_s
        )
        self.dispatcher = Dispatcher(orchestrator, self.reports, self.kick, self._background.spawn)

    def set_auditor(self, auditor: Auditor | None) -> None:
        """Audit the secrets each dispatch hands out, and refused agent reports."""
        self.dispatcher.auditor = self.reports.auditor = auditor

    # ---- queue ------------------------------------------------------------------------------
    def on_job_changed(self, event: JobChanged) -> None:
        job = event.job
        if job.state is JobState.QUEUED:
            if event.remote and (job.id in self.queue or job.id in self._delayed):
                return  # queued here already (another server's event about it)
            self.admit(job)
        elif event.previous is JobState.QUEUED or event.remote:
            self.queue.discard(job.id)
            if (timer := self._delayed.pop(job.id, None)) is not None:
                timer.cancel()

    def admit(self, job: Job) -> None:
        """Queue a queued job, or wait out its retry backoff first (`not_before` is stored with
        the job, so a restarted server and the others sharing the store honour it too)."""
        delay = (job.not_before or 0.0) - self.orch.now()
        if delay > 0:
            loop = asyncio.get_running_loop()
            self._delayed[job.id] = loop.call_later(delay, self._release, job)
        else:
            self.enqueue(job)

    def _release(self, job: Job) -> None:
        if self._delayed.pop(job.id, None) is not None:
            self.enqueue(job)

    def enqueue(self, job: Job) -> None:
        self.queue.push(job)
        self.kick()

    def kick(self) -> None:
        self._dirty.set()

    def pending_reason(self, job_id: str) -> str:
        """Why a queued job waits, worked out when asked (no pass writes a reason per job)."""
        known = self.queue.reason(job_id)
        if known is None:
            return ""
        why, never = known
        if never:
            return why
        note = None
        if self._starved:
            note = self._note if self._note_known else self.note(self.queue.fitting(self.fits))
        if note:
            return f"{why or 'waiting'}; {note}"
        return why or "waiting for a free worker slot"

    @property
    def queued_count(self) -> int:
        return len(self.queue)

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        if self._loop_task:
            self._loop_task.cancel()
        await self._background.stop()

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                if self._pass():
                    self.kick()  # bounded pass: the rest after other work had its turn
            except Exception:
                log.exception("scheduling pass failed")
            await asyncio.sleep(0)  # let dispatches and I/O run between passes

    # ---- placement --------------------------------------------------------------------------
    def _pass(self) -> bool:
        """Place jobs in rank order while workers have free slots; True when the pass
        stopped at MAX_PLACED_PER_PASS with more to place."""
        views = self.registry.views()
        free = sum(v.free_slots for v in views)
        queue = self.queue
        heads = queue.heads()
        placed = 0
        waiting_shapes: list[Shape] = []
        by_id = {v.id: v for v in views}
        while heads and free > 0:
            if placed >= MAX_PLACED_PER_PASS:
                return True
            shape = heads[0][1]
            job = queue.first(shape)
            outcome = place(job.spec, views, self.policy)
            if isinstance(outcome, Placement):
                following = queue.take(shape)
                worker = by_id[outcome.worker_id]
                reserve(worker, job.spec)
                free -= 1
                placed += 1
                session = self.registry.get(worker.id)
                assert session is not None
                self._background.spawn(self.dispatcher.dispatch(job, session))
                if following is None:
                    heapq.heappop(heads)
                else:
                    heapq.heapreplace(heads, (following, shape))
                continue
            heapq.heappop(heads)  # no job of this shape fits now: skip the shape this pass
            never = unschedulable(job.spec, views, self.ceiling)
            if never:
                queue.reject(shape, never, True)
            else:
                queue.reject(shape, "waiting for a worker: " + outcome.summary(), False)
                waiting_shapes.append(shape)
        waiting_shapes.extend(shape for _, shape in heads)  # left when the slots ran out
        self._starved = bool(waiting_shapes)
        self._note_known = False
        if waiting_shapes and self.can_grow():
            # The waiting jobs are listed only when the provisioner can act on them.
            self._note = self.demand(queue.waiting_jobs(waiting_shapes))
            self._note_known = True
        return False

    async def on_worker_lost(self, session: WorkerSession) -> None:
        """The worker is gone for good: settle its attempts by the retry policy."""
        session.close()
        self.registry.remove(session)
        held_jobs = list(session.jobs.values())
        session.jobs.clear()
        for held in held_jobs:
            await self.reports.lose(session, held)
        self.kick()

    # ---- user actions ------------------------------------------------------------------------
    async def cancel(self, job_id: str) -> Job:
        for _ in range(5):
            job = await self.orch.store.get_job(job_id)
            if job.state.terminal:
                raise ConflictError(f"job {job_id} already ended ({job.state})")
            try:
                return await self._cancel(job)
            except ConflictError:
                continue  # it moved while we looked: look again
        raise ConflictError(f"job {job_id} keeps changing state; try again")

    async def _cancel(self, job: Job) -> Job:
        if job.state is JobState.QUEUED:
            return await self.orch.finish(job, JobState.CANCELLED, None, "cancelled by user")
        session = self.registry.get(job.worker_id)
        held = session.jobs.get(job.id) if session else None
        if session is None or held is None:
            if self.remote_cancel is not None and job.worker_id:
                self.remote_cancel(job.id)  # its worker may be another server's: kill it there
            return await self.orch.finish(job, JobState.CANCELLED, None, "cancelled by user")
        if not held.cancel_sent:
            held.cancel_sent = True
            session.send_cancel(self.cancel_message(held))
        return held.job

    def cancel_message(self, held: HeldJob) -> pb.CancelJob:
        return pb.CancelJob(
            job_id=held.job_id,
            attempt=held.attempt,
            grace_ms=self.cancel_grace_ms,
            reason="cancelled by user",
        )

    async def retry(self, job_id: str) -> Job:
        job = await self.orch.store.get_job(job_id)
        if not job.state.terminal:
            raise ConflictError(f"job {job_id} is {job.state}; only a finished job can be retried")
        return await self.orch.requeue(job, reason=f"retry of attempt {job.attempts}")

    def held_job(self, job_id: str, worker_id: str | None) -> Job | None:
        session = self.registry.get(worker_id)
        held = session.jobs.get(job_id) if session else None
        return held.job if held else None
