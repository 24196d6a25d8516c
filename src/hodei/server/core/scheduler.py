"""Scheduler: an event-driven loop over the queue of pending jobs (job_queue.JobQueue).

A pass runs whenever something changes (a job queued, a worker registered or freed a slot);
there is no polling sleep. Each pass places jobs in priority order on a snapshot of the workers
(domain.scheduling.place), reserves the slot at once, then dispatches (dispatch.Dispatcher);
jobs no worker can take ask for capacity (the provisioner answers: see Capacity). What agents
report on their jobs is handled by reports.Reports; user actions by control.JobControl.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from typing import Protocol

from hodei.domain.jobs import Job, JobSpec, JobState
from hodei.domain.scheduling import Placement, Policy, place, reserve, unschedulable
from hodei.errors import ConflictError
from hodei.server.core.background import Background
from hodei.server.core.bus import ImageUnavailable, JobChanged
from hodei.server.core.dispatch import Dispatcher
from hodei.server.core.job_queue import JobQueue, Shape
from hodei.server.core.orchestrator import Orchestrator
from hodei.server.core.passes import PassSignal
from hodei.server.core.tracing import NO_TRACING, Tracing
from hodei.server.core.workers import WorkerRegistry

log = logging.getLogger(__name__)

MAX_PLACED_PER_PASS = 128  # then yield, so log fan-out and gRPC reads interleave with a burst


class Capacity(Protocol):
    """Where more workers come from (the provisioner): what it can start, and why not."""

    def ceiling(self, spec: JobSpec) -> str | None:
        """Why no worker it could start would ever take `spec`; None when one would."""
        ...

    def can_grow(self) -> bool:
        """Whether demand() could start a worker now (asked first: with the cap reached, the
        usual state under load, the waiting jobs are never listed)."""
        ...

    def demand(self, waiting: list[Job]) -> str | None:
        """The jobs no current worker can take now; returns what is done about it."""
        ...

    def note(self, fitting: int) -> str | None:
        """What demand() would say about `fitting` waiting jobs, without starting anything."""
        ...

    def fits(self, labels: dict[str, str], image: str | None) -> bool:
        """Whether it can start workers that carry `labels` and run `image`."""
        ...


class NoCapacity:
    """No provisioner: only the workers that connect by themselves."""

    def ceiling(self, spec: JobSpec) -> str | None:
        return "no worker can be provisioned"

    def can_grow(self) -> bool:
        return False

    def demand(self, waiting: list[Job]) -> str | None:
        return None

    def note(self, fitting: int) -> str | None:
        return None

    def fits(self, labels: dict[str, str], image: str | None) -> bool:
        return True


class Scheduler:
    def __init__(
        self,
        orchestrator: Orchestrator,
        registry: WorkerRegistry,
        dispatcher: Dispatcher,
        capacity: Capacity,
        passes: PassSignal,
        background: Background,
        policy: Policy = Policy.SPREAD,
        aging_s: float = 60.0,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self.orch = orchestrator
        self.tracing = tracing  # told of each placement (the scheduling decision's span)
        self.registry = registry
        self.dispatcher = dispatcher
        self.capacity = capacity
        self.passes = passes
        self.background = background  # runs the dispatches
        self.policy = policy
        self._delayed: dict[str, asyncio.TimerHandle] = {}  # retries waiting out a backoff
        self.queue = JobQueue(aging_s)
        self._starved = False  # the last pass left jobs waiting for capacity
        self._note: str | None = None  # demand()'s answer in that pass, when it was asked
        self._note_known = False
        self._loop_task: asyncio.Task[None] | None = None

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

    def on_image_unavailable(self, event: ImageUnavailable) -> None:
        """No worker can ever start in `event.image`: its queued jobs fail with the reason."""
        for job in self.queue.with_image(event.image):
            self.background.spawn(self._fail_unrunnable(job, event.reason))

    async def _fail_unrunnable(self, job: Job, reason: str) -> None:
        # A conflict: cancelled, or placed on a worker of that image after all, meanwhile.
        with contextlib.suppress(ConflictError):
            await self.orch.finish(job, JobState.FAILED, None, reason)

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
        self.passes.kick()

    def pending_reason(self, job_id: str) -> str:
        """Why a queued job waits, worked out when asked (no pass writes a reason per job)."""
        known = self.queue.reason(job_id)
        if known is None:
            return ""
        why, never = known
        if never:
            return why
        if not why and (job := self.queue.get(job_id)) is not None:
            # No pass has looked at it (no free slot anywhere): one that no worker there is,
            # and none the provider could start, would ever take says so now, not "waiting".
            hopeless = unschedulable(job.spec, self.registry.views(), self.capacity.ceiling)
            if hopeless:
                return hopeless
        note = None
        if self._starved:
            capacity = self.capacity
            note = (
                self._note if self._note_known else capacity.note(self.queue.fitting(capacity.fits))
            )
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
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for timer in self._delayed.values():
            timer.cancel()

    async def _run(self) -> None:
        while True:
            await self.passes.wait()
            try:
                if self._pass():
                    self.passes.kick()  # bounded pass: the rest after other work had its turn
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
        traced = self.tracing.on
        while heads and free > 0:
            if placed >= MAX_PLACED_PER_PASS:
                return True
            shape = heads[0][1]
            job = queue.first(shape)
            started = time.time_ns() if traced else 0
            outcome = place(job.spec, views, self.policy)
            if isinstance(outcome, Placement):
                following = queue.take(shape)
                worker = by_id[outcome.worker_id]
                reserve(worker, job.spec)
                free -= 1
                placed += 1
                session = self.registry.get(worker.id)
                assert session is not None
                if traced:
                    self.tracing.placed(job, worker.id, started)
                self.background.spawn(self.dispatcher.dispatch(job, session))
                if following is None:
                    heapq.heappop(heads)
                else:
                    heapq.heapreplace(heads, (following, shape))
                continue
            heapq.heappop(heads)  # no job of this shape fits now: skip the shape this pass
            never = unschedulable(job.spec, views, self.capacity.ceiling)
            if never:
                queue.reject(shape, never, True)
            else:
                queue.reject(shape, "waiting for a worker: " + outcome.summary(), False)
                waiting_shapes.append(shape)
        waiting_shapes.extend(shape for _, shape in heads)  # left when the slots ran out
        self._starved = bool(waiting_shapes)
        self._note_known = False
        if waiting_shapes and self.capacity.can_grow():
            # The waiting jobs are listed only when the provisioner can act on them.
            self._note = self.capacity.demand(queue.waiting_jobs(waiting_shapes))
            self._note_known = True
        return False
