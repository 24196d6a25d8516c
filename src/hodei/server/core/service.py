"""The job use cases both APIs (REST and gRPC) share: submit, read, list, cancel, retry, logs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hodei.domain.attempts import Attempt
from hodei.domain.job_filter import job_filter
from hodei.domain.jobs import Job, JobSpec, JobState, attempt_over, log_attempt, shown
from hodei.errors import HodeiError, ValidationError
from hodei.ports import JobStore
from hodei.server.core.control import JobControl
from hodei.server.core.loghub import LogHub
from hodei.server.core.logindex import LineIndexes
from hodei.server.core.orchestrator import Orchestrator
from hodei.server.core.scheduler import Scheduler


@dataclass(frozen=True, slots=True)
class LogPiece:
    offset: int  # byte offset just after `data`
    data: bytes


class JobsApi:
    def __init__(
        self,
        orchestrator: Orchestrator,
        store: JobStore,
        scheduler: Scheduler,
        control: JobControl,
        hub: LogHub,
    ) -> None:
        self.orch = orchestrator
        self.store = store
        self.scheduler = scheduler  # why queued jobs wait
        self.control = control
        self.hub = hub
        self.line_indexes = LineIndexes()

    async def submit(self, spec: JobSpec, job_id: str | None = None) -> Job:
        return await self.orch.submit(spec, job_id)

    async def submit_once(
        self,
        spec: JobSpec,
        job_id: str | None,
        idempotency_key: str | None,
        traceparent: str | None = None,
    ) -> tuple[Job, bool]:
        """(job, created): with a known idempotency key, the job it created earlier.
        `traceparent`: the caller's W3C trace context, which the job's trace continues."""
        return await self.orch.submit_once(spec, job_id, idempotency_key, traceparent=traceparent)

    async def submit_many(
        self, requests: Sequence[tuple[JobSpec, str | None]], traceparent: str | None = None
    ) -> list[tuple[Job, bool] | HodeiError]:
        return await self.orch.submit_many(requests, traceparent)

    async def attempts(self, job_id: str) -> list[Attempt]:
        await self.get(job_id)  # NotFoundError for an unknown job
        return await self.store.list_attempts(job_id)

    async def get(self, job_id: str) -> Job:
        return await self.store.get_job(job_id)

    def reason(self, job: Job) -> str:
        """Why a queued job waits (live, from the scheduler), else the stored reason."""
        if job.state is JobState.QUEUED:
            waiting = self.scheduler.pending_reason(job.id)
            if waiting and job.reason:  # e.g. why the last attempt ended, then why it waits
                return f"{job.reason}; {waiting}"
            return waiting or job.reason
        return job.reason

    async def list(
        self,
        state: str | None,
        limit: int,
        cursor: int | None,
        *,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        pipeline: str | None = None,
    ) -> tuple[list[Job], int | None]:
        """A page of jobs, newest first, that meet every filter given (domain.job_filter)."""
        wanted = job_filter(parse_state(state), name, labels, pipeline)
        return await self.store.list_jobs(
            wanted.state,
            limit,
            cursor,
            name=wanted.name,
            labels=wanted.label_map,
            pipeline=wanted.pipeline,
        )

    async def cancel(self, job_id: str) -> Job:
        return await self.control.cancel(job_id)

    async def retry(self, job_id: str) -> Job:
        return await self.control.retry(job_id)

    async def resolve_attempt(self, job_id: str, attempt: int | None) -> tuple[Job, int]:
        job = await self.get(job_id)
        if attempt is None:
            return job, log_attempt(job)
        if not 1 <= attempt <= max(job.attempts, 1):
            raise ValidationError(f"job {job_id} has no attempt {attempt}")
        return job, attempt

    async def log_size(self, job_id: str, attempt: int | None) -> tuple[int, int]:
        """(attempt, the size of its log now): the attempt asked for, or the one shown."""
        _, attempt = await self.resolve_attempt(job_id, attempt)
        return attempt, await self.hub.size_now(job_id, attempt)

    async def read_log_span(self, job_id: str, attempt: int, offset: int, limit: int) -> bytes:
        """Up to `limit` bytes of a resolved attempt's log (see log_size) from `offset`."""
        return await self.hub.read_span(job_id, attempt, offset, limit)

    async def log_index(self, job_id: str, attempt: int | None) -> dict[str, Any]:
        """Where lines start in the attempt's log (server.core.logindex), with the attempt."""
        attempt, size = await self.log_size(job_id, attempt)
        store = self.hub.store

        def read(offset: int, limit: int) -> bytes:  # from a worker thread: the store, not the tail
            return store.read(job_id, attempt, offset, limit)

        return {"attempt": attempt, **await self.line_indexes.index(job_id, attempt, size, read)}

    async def follow(
        self, job_id: str, attempt: int | None, offset: int, wait: bool = True
    ) -> AsyncIterator[LogPiece | Job]:
        """Log pieces from `offset`, then the job as it stands once the attempt is over."""
        _, attempt = await self.resolve_attempt(job_id, attempt)
        live = self.hub.open(job_id, attempt)
        job = await self.get(job_id)  # read after open(): no later change can be missed
        if attempt_over(job, attempt):
            live.over = True
        async for end, data in self.hub.follow(job_id, attempt, live, max(0, offset), wait):
            yield LogPiece(end, data)
        yield await self.get(job_id)


def parse_state(state: str | None) -> JobState | None:
    if not state:
        return None
    try:
        return JobState(state)
    except ValueError:
        names = ", ".join(s.value for s in JobState)
        raise ValidationError(f"unknown state {shown(state)} (one of: {names})") from None
