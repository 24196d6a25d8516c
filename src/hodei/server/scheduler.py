"""Scheduler: an event-driven loop over the queue of pending jobs.

A pass runs whenever something changes (a job queued, a worker registered or freed a slot);
there is no polling sleep. Each pass places jobs in priority order on a snapshot of the workers
(domain.scheduling.place), reserves the slot at once, then dispatches; jobs no worker can take
ask the provisioner for workers.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from hodei._proto.hodei.v1 import worker_pb2 as pb
from hodei.domain.attempts import AttemptState
from hodei.domain.jobs import Job, JobSpec, JobState
from hodei.domain.scheduling import (
    Placement,
    Policy,
    place,
    release,
    reserve,
    unschedulable,
)
from hodei.errors import ConflictError, HodeiError
from hodei.server.audit import Auditor
from hodei.server.bus import JobChanged
from hodei.server.loghub import LogHub
from hodei.server.orchestrator import Orchestrator
from hodei.server.workers import HeldJob, WorkerRegistry, WorkerSession, assignment_stored

log = logging.getLogger(__name__)

NOT_RUN = -1  # JobResult.exit_code of an attempt the agent never started
Demand = Callable[[list[Job]], str | None]  # jobs waiting for capacity -> reason text
MAX_PLACED_PER_PASS = 128  # then yield, so log fan-out and gRPC reads interleave with a burst
# What placement looks at in a spec (labels, cpu, memory): jobs of one shape fit the same
# workers, so one rejection in a pass stands for all of them.
Shape = tuple[tuple[tuple[str, str], ...], float, int]
Entry = tuple[float, int, str]  # (rank, seq, job id): heap order


def shape_of(spec: JobSpec) -> Shape:
    return (tuple(sorted(spec.labels.items())), spec.cpu, spec.memory_bytes)


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
        self.aging_s = aging_s
        self.retry_backoff_s = retry_backoff_s
        self.auditor: Auditor | None = None  # records which job got which secrets
        # Several servers on one store (server.cluster): tell the others to cancel a job whose
        # worker is theirs; and store an assignment before sending it, since another server
        # may be placing the same queued job at the same moment.
        self.remote_cancel: Callable[[str], None] | None = None
        self.send_before_commit = True
        self.max_output_bytes = 0  # per attempt, told to agents (0: the agent's default)
        self._delayed: dict[str, asyncio.TimerHandle] = {}  # retries waiting out a backoff
        self.ceiling: Callable[[JobSpec], str | None] = lambda spec: "no worker can be provisioned"
        self.demand: Demand = lambda jobs: None
        # The provisioner's answers without listing jobs (see Provisioner.can_grow/note/fits).
        self.can_grow: Callable[[], bool] = lambda: True
        self.note: Callable[[int], str | None] = lambda fitting: None
        self.fits: Callable[[dict[str, str]], bool] = lambda labels: True
        # One heap per shape: a pass looks at the head of each, so jobs no worker can take
        # cost nothing while they wait (no pass walks the whole queue).
        self._shapes: dict[Shape, list[Entry]] = {}
        self._queued: dict[str, Job] = {}
        self._why: dict[Shape, tuple[str, bool]] = {}  # why a shape waits; True: unschedulable
        self._starved = False  # the last pass left jobs waiting for capacity
        self._note: str | None = None  # demand()'s answer in that pass, when it was asked
        self._note_known = False
        self._dirty = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    # ---- queue ------------------------------------------------------------------------------
    def on_job_changed(self, event: JobChanged) -> None:
        job = event.job
        if job.state is JobState.QUEUED:
            if event.remote and (job.id in self._queued or job.id in self._delayed):
                return  # queued here already (another server's event about it)
            self.admit(job)
        elif event.previous is JobState.QUEUED or event.remote:
            self._queued.pop(job.id, None)  # its heap entry is dropped when it comes up
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
        self._queued[job.id] = job
        heap = self._shapes.setdefault(shape_of(job.spec), [])
        heapq.heappush(heap, (queue_rank(job, self.aging_s), job.seq, job.id))
        self.kick()

    def kick(self) -> None:
        self._dirty.set()

    def pending_reason(self, job_id: str) -> str:
        """Why a queued job waits, worked out when asked (no pass writes a reason per job)."""
        job = self._queued.get(job_id)
        if job is None:
            return ""
        why, never = self._why.get(shape_of(job.spec), ("", False))
        if never:
            return why
        note = None
        if self._starved:
            note = self._note if self._note_known else self.note(self._fitting())
        if note:
            return f"{why or 'waiting'}; {note}"
        return why or "waiting for a free worker slot"

    def _fitting(self) -> int:
        """Queued jobs (stale heap entries included) the provisioner's workers could take."""
        return sum(
            len(heap)
            for shape, heap in self._shapes.items()
            if not self._why.get(shape, ("", False))[1] and self.fits(dict(shape[0]))
        )

    @property
    def queued_count(self) -> int:
        return len(self._queued)

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        if self._loop_task:
            self._loop_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

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
    def _head(self, heap: list[Entry]) -> Job | None:
        """The job at the top of a shape's heap, dropping stale entries (cancelled, placed)."""
        while heap:
            entry = heap[0]
            job = self._queued.get(entry[2])
            if job is not None and job.seq == entry[1]:
                return job
            heapq.heappop(heap)
        return None

    def _pass(self) -> bool:
        """Place jobs in rank order while workers have free slots; True when the pass
        stopped at MAX_PLACED_PER_PASS with more to place."""
        views = self.registry.views()
        free = sum(v.free_slots for v in views)
        heads: list[tuple[Entry, Shape]] = []
        for shape, heap in list(self._shapes.items()):
            if self._head(heap) is None:
                del self._shapes[shape]
                self._why.pop(shape, None)
            else:
                heads.append((heap[0], shape))
        heapq.heapify(heads)
        placed = 0
        waiting_shapes: list[Shape] = []
        by_id = {v.id: v for v in views}
        while heads and free > 0:
            if placed >= MAX_PLACED_PER_PASS:
                return True
            shape = heads[0][1]
            heap = self._shapes[shape]
            job = self._queued[heap[0][2]]
            outcome = place(job.spec, views, self.policy)
            if isinstance(outcome, Placement):
                heapq.heappop(heap)
                del self._queued[job.id]
                self._why.pop(shape, None)
                worker = by_id[outcome.worker_id]
                reserve(worker, job.spec)
                free -= 1
                placed += 1
                session = self.registry.get(worker.id)
                assert session is not None
                self._spawn(self._dispatch(job, session))
                if self._head(heap) is None:
                    heapq.heappop(heads)
                else:
                    heapq.heapreplace(heads, (heap[0], shape))
                continue
            heapq.heappop(heads)  # no job of this shape fits now: skip the shape this pass
            never = unschedulable(job.spec, views, self.ceiling)
            if never:
                self._why[shape] = (never, True)
            else:
                self._why[shape] = ("waiting for a worker: " + outcome.summary(), False)
                waiting_shapes.append(shape)
        waiting_shapes.extend(shape for _, shape in heads)  # left when the slots ran out
        self._starved = bool(waiting_shapes)
        self._note_known = False
        if waiting_shapes and self.can_grow():
            self._note = self.demand(self._waiting_jobs(waiting_shapes))
            self._note_known = True
        return False

    def _waiting_jobs(self, shapes: list[Shape]) -> list[Job]:
        """The queued jobs of `shapes`, highest rank first (only built when the provisioner
        can act on them)."""
        jobs: dict[str, Job] = {}  # by id: a re-queued job may have two entries
        for e in sorted(e for shape in shapes for e in self._shapes[shape]):
            job = self._queued.get(e[2])
            if job is not None and job.seq == e[1]:
                jobs.setdefault(job.id, job)
        return list(jobs.values())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch(self, job: Job, session: WorkerSession) -> None:
        try:
            secrets = await self.orch.vault.values(job.spec.secrets)
        except HodeiError as exc:  # e.g. a secret deleted after submit
            release(session.view, job.spec)
            await self._fail_quietly(job, f"cannot dispatch: {exc.message}")
            self.kick()
            return
        if job.spec.secrets and self.auditor is not None:
            used = self.auditor.record(
                f"worker:{session.id}",
                "secret.use",
                ",".join(job.spec.secrets),
                f"job {job.id} attempt {job.attempts + 1}",
            )
            self._spawn(used)  # off the dispatch path: the trail must not slow a start
        changes: dict[str, Any] = {"worker_id": session.id, "attempts": job.attempts + 1}
        assigned = job.with_changes(state=JobState.ASSIGNED, **changes)
        held = HeldJob(job.id, assigned.attempts, assigned)
        held.committed = asyncio.get_running_loop().create_future()
        session.jobs[job.id] = held
        # The assignment leaves at once, before the `assigned` write commits: the agent starts
        # while the store syncs (one commit fewer between submit and start). What it reports
        # is applied only once the write has committed (assignment_stored); if the server
        # dies first, the job is still queued in the store and Recovery.adopt tells the agent
        # to drop its attempt: the job runs again (at least once, as promised).
        sent = not session.closed and self.send_before_commit
        if sent:
            session.send_assign(assign_message(assigned, secrets, self.max_output_bytes))
        try:
            held.job = await self.orch.move(job, JobState.ASSIGNED, **changes)
        except HodeiError as exc:  # ConflictError: cancelled meanwhile
            held.committed.set_result(False)
            if session.jobs.get(job.id) is held:  # else whoever took it freed its slot
                del session.jobs[job.id]
                if sent and not session.unsend_assign(job.id, held.attempt):
                    session.send_cancel(
                        pb.CancelJob(
                            job_id=job.id,
                            attempt=held.attempt,
                            grace_ms=0,
                            reason="this attempt was not recorded (the job moved on)",
                        )
                    )
                release(session.view, job.spec)
            if not isinstance(exc, ConflictError):
                await self._fail_quietly(job, f"cannot dispatch: {exc.message}")
            self.kick()
            return
        held.committed.set_result(True)
        if not self.send_before_commit and not session.closed and session.jobs.get(job.id) is held:
            session.send_assign(assign_message(held.job, secrets, self.max_output_bytes))
            sent = True
        if held.early_logs:  # before anything waiting on `committed` resumes
            early, held.early_logs = held.early_logs, []
            self.store_logs(session, early)
        if not sent and session.jobs.get(job.id) is held:
            await self._lose(session, session.jobs.pop(job.id))

    async def _fail_quietly(self, job: Job, reason: str) -> None:
        try:
            await self.orch.finish(job, JobState.FAILED, None, reason)
        except HodeiError:
            log.info("job %s moved on before it could be failed: %s", job.id, reason)

    # ---- agent reports -----------------------------------------------------------------------
    def store_logs(self, session: WorkerSession, chunks: Iterable[pb.LogChunk]) -> None:
        """Store log chunks of jobs this worker holds and ack them. Chunks of an attempt whose
        `assigned` write has not committed yet wait in its HeldJob (in order) until it has;
        they are dropped if it fails (the attempt never existed)."""
        acked: dict[tuple[str, int], int] = {}
        foreign: set[tuple[str, int]] = set()
        for chunk in chunks:
            held = session.jobs.get(chunk.job_id)
            if held is None or held.attempt != chunk.attempt:
                foreign.add((chunk.job_id, chunk.attempt))
                continue  # not this worker's job (or a stale attempt): never stored
            if held.early_logs or (held.committed is not None and not held.committed.done()):
                held.early_logs.append(chunk)
                continue
            try:
                self.hub.append(
                    chunk.job_id, chunk.attempt, chunk.sequence, chunk.offset, chunk.data
                )
            except HodeiError as exc:
                log.error("log of job %s not stored: %s", chunk.job_id, exc.message)
                break  # unacked: the agent keeps the bytes and sends them again
            acked[(chunk.job_id, chunk.attempt)] = self.hub.last_seq(chunk.job_id, chunk.attempt)
        for (job_id, attempt), seq in acked.items():
            session.ack_log(job_id, attempt, seq)
        for job_id, attempt in foreign:
            self._refused_report(session, job_id, f"log of attempt {attempt}")

    def _refused_report(self, session: WorkerSession, job_id: str, what: str) -> None:
        """An agent reported on a job it does not hold (stale, or not its own): audited."""
        if self.auditor is not None:
            detail = f"{what}: not held by this worker"
            self._spawn(
                self.auditor.denied(f"worker:{session.id}", "worker.report_refused", job_id, detail)
            )

    async def on_started(
        self, session: WorkerSession, update: pb.JobStatusUpdate, with_result: bool = False
    ) -> None:
        """`with_result`: the attempt's result came in the same message; the start is then
        stored with it, in one write instead of two."""
        held = session.jobs.get(update.job_id)
        if held is None or held.attempt != update.attempt:
            return
        started_at = self.orch.now()  # when the report came, not when it could be stored
        if with_result:
            if held.started_at is None:
                held.started_at = started_at
            return
        if not await assignment_stored(held) or session.jobs.get(update.job_id) is not held:
            return
        if held.job.state is JobState.ASSIGNED:
            try:
                held.job = await self.orch.move(held.job, JobState.RUNNING, started_at=started_at)
            except ConflictError as exc:
                log.warning("start of %s refused: %s", held.job.id, exc)

    async def on_result(self, session: WorkerSession, result: pb.JobResult) -> None:
        held = session.jobs.get(result.job_id)
        if (
            held is not None
            and held.attempt == result.attempt
            and (not await assignment_stored(held) or session.jobs.get(result.job_id) is not held)
        ):
            held = None  # its `assigned` write failed: the attempt never existed
        if held is None or held.attempt != result.attempt:
            session.ack_result(result.job_id, result.attempt, False, "job not held by this worker")
            self._refused_report(session, result.job_id, f"result of attempt {result.attempt}")
            return
        del session.jobs[result.job_id]
        if result.exit_code == NOT_RUN and not held.cancel_sent:
            await self._requeue_unrun(held, result.error)
        else:
            reason = describe(result, held.cancel_sent)
            if self.hub.last_seq(held.job_id, held.attempt) < result.last_sequence:
                reason = f"{reason} (log incomplete: the server could not store all of it)"
            await self._settle(held, result_target(result, held), result.exit_code, reason)
        session.ack_result(result.job_id, result.attempt, True)
        self._freed(session, held)

    async def requeue_unrun(self, session: WorkerSession, held: HeldJob, why: str) -> None:
        """An attempt its worker never got (lost in a dropped stream): queue the job again."""
        await self._requeue_unrun(held, why)
        self._freed(session, held)

    async def settle_lost(self, job: Job, why: str) -> None:
        """An attempt no worker holds any more (after a restart): the retry policy decides."""
        await self._settle(HeldJob(job.id, job.attempts, job), JobState.FAILED, None, why)

    async def _requeue_unrun(self, held: HeldJob, error: str) -> None:
        """The agent never started this attempt (e.g. it was shutting down): queue it again."""
        try:
            if not await assignment_stored(held):
                return  # the attempt was never recorded: the job is where it was
            await self.orch.requeue(
                held.job, reason=f"not run by its worker: {error}", outcome=AttemptState.NOT_RUN
            )
        except ConflictError as exc:
            log.warning("could not requeue %s: %s", held.job_id, exc)
        finally:
            self.hub.seal(held.job_id, held.attempt)

    def _freed(self, session: WorkerSession, held: HeldJob) -> None:
        release(session.view, held.job.spec)
        if not session.jobs:
            session.last_busy = time.monotonic()
        self.kick()

    async def _settle(
        self, held: HeldJob, target: JobState, exit_code: int | None, reason: str
    ) -> None:
        """Record the end of an attempt: retry it when the policy allows, else finish the job."""
        job = held.job
        try:
            if not await assignment_stored(held):
                return  # the attempt was never recorded: nothing to settle
            started: dict[str, Any] = {}
            if held.started_at is not None and job.state is JobState.ASSIGNED:
                started["started_at"] = held.started_at  # reported with the result
            if target is JobState.FAILED and job.attempts <= job.spec.max_retries:
                delay = retry_delay(self.retry_backoff_s, job.attempts)
                await self.orch.move(
                    job,
                    JobState.QUEUED,
                    exit_code=exit_code,
                    worker_id=None,
                    not_before=self.orch.now() + delay,
                    reason=f"attempt {job.attempts} {reason}; retrying in {delay:g}s",
                    **started,
                )
            elif started:
                await self.orch.move(
                    job,
                    target,
                    exit_code=exit_code,
                    reason=reason,
                    finished_at=self.orch.now(),
                    **started,
                )
            else:
                await self.orch.finish(job, target, exit_code, reason)
        except ConflictError as exc:
            log.warning("result of %s attempt %d not applied: %s", job.id, held.attempt, exc)
        finally:
            # Sealing wakes log followers, who then read the job: only once its new state is
            # stored (a store with concurrent connections could serve them the old one first).
            self.hub.seal(job.id, held.attempt)

    async def on_worker_lost(self, session: WorkerSession) -> None:
        """The worker is gone for good: settle its attempts by the retry policy."""
        session.close()
        self.registry.remove(session)
        held_jobs = list(session.jobs.values())
        session.jobs.clear()
        for held in held_jobs:
            await self._lose(session, held)
        self.kick()

    async def _lose(self, session: WorkerSession, held: HeldJob) -> None:
        if held.cancel_sent:
            await self._settle(held, JobState.CANCELLED, None, "cancelled (worker gone)")
        else:
            await self._settle(held, JobState.FAILED, None, f"worker {session.id} lost")
        release(session.view, held.job.spec)

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


def retry_delay(base_s: float, attempts: int) -> float:
    """Exponential backoff before retry number `attempts`: base, 2*base, 4*base... (<= 5 min)."""
    return min(300.0, base_s * 2.0 ** max(0, attempts - 1))


def queue_rank(job: Job, aging_s: float) -> float:
    """Lower runs first. With aging, waiting `aging_s` seconds is worth one priority point:
    priority + (now - created) / aging_s orders jobs as priority - created / aging_s does
    (now is the same for all), so the rank is fixed at enqueue time and no job starves."""
    if aging_s <= 0:
        return float(-job.spec.priority)
    return job.created_at / aging_s - job.spec.priority


def result_target(result: pb.JobResult, held: HeldJob) -> JobState:
    if held.cancel_sent and (result.cancelled or result.signal):
        return JobState.CANCELLED
    if (
        result.cancelled
    ):  # the agent stopped on its own (e.g. its host shut down): not a user cancel
        return JobState.FAILED
    if result.timed_out:
        return JobState.TIMED_OUT
    return JobState.SUCCEEDED if result.exit_code == 0 and not result.error else JobState.FAILED


def describe(result: pb.JobResult, held_cancelled: bool = True) -> str:
    if result.error:
        return result.error
    if result.cancelled:
        return "cancelled by user" if held_cancelled else "stopped with its worker"
    if result.timed_out:
        return "timed out"
    if result.signal:
        return f"killed by signal {result.signal}"
    return f"exited with code {result.exit_code}" if result.exit_code else ""


def assign_message(job: Job, secrets: dict[str, str], max_output_bytes: int = 0) -> pb.AssignJob:
    spec = job.spec
    return pb.AssignJob(
        job_id=job.id,
        attempt=job.attempts,
        name=spec.name,
        command=spec.command,
        arguments=list(spec.arguments),
        environment=spec.env,
        secrets=secrets,
        resources={"cpu": spec.cpu, "memory_bytes": spec.memory_bytes},
        timeout_ms=int(spec.timeout_s * 1000),
        max_output_bytes=max_output_bytes,
    )
