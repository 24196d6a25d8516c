"""gRPC JobExecutionService: the client job API, in the seeds' shape (hodei.v1 prefix)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from hodei._proto.hodei.v1 import jobs_pb2 as pb
from hodei._proto.hodei.v1 import jobs_pb2_grpc
from hodei.domain.jobs import Job, JobSpec
from hodei.errors import AuthError, ConflictError, HodeiError, NotFoundError, ValidationError
from hodei.server.service import JobsApi, LogPiece
from hodei.server.views import attempt_to_proto, job_to_proto

T = TypeVar("T")
Context = Any  # grpc.aio.ServicerContext: grpcio ships no type information

_STATUS = {
    ValidationError: grpc.StatusCode.INVALID_ARGUMENT,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    ConflictError: grpc.StatusCode.FAILED_PRECONDITION,
    AuthError: grpc.StatusCode.UNAUTHENTICATED,
}


async def _call(context: Context, work: Callable[[], Awaitable[T]]) -> T:
    """Run a use case; turn our errors into gRPC status codes with their message."""
    try:
        return await work()
    except HodeiError as exc:
        code = _STATUS.get(type(exc), grpc.StatusCode.UNAVAILABLE)
        await context.abort(code, exc.message)
        raise


def spec_from_definition(d: pb.JobDefinition, queued_by: str) -> JobSpec:
    return JobSpec(
        command=d.command,
        arguments=tuple(d.arguments),
        name=d.name,
        env=dict(d.environment),
        secrets=tuple(d.secrets),
        labels=dict(d.labels),
        cpu=d.resources.cpu,
        memory_bytes=d.resources.memory_bytes,
        timeout_s=float(d.timeout_seconds),
        max_retries=d.max_retries,
        priority=d.priority,
        queued_by=queued_by,
    )


class JobService(jobs_pb2_grpc.JobExecutionServiceServicer):
    def __init__(self, api: JobsApi) -> None:
        self.api = api

    def _proto(self, job: Job) -> pb.Job:
        return job_to_proto(job, self.api.reason(job))

    async def QueueJob(self, request: pb.QueueJobRequest, context: Context) -> pb.QueueJobResponse:
        d = request.job_definition
        spec = spec_from_definition(d, request.queued_by)
        key = request.idempotency_key or None
        job, created = await _call(
            context, lambda: self.api.submit_once(spec, d.job_id.value or None, key)
        )
        message = f"job {job.id} queued" if created else f"job {job.id} (same idempotency key)"
        return pb.QueueJobResponse(
            success=True, message=message, job=self._proto(job), created=created
        )

    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.Job:
        job_id = request.job_id.value
        job = self._proto(await _call(context, lambda: self.api.get(job_id)))
        attempts = await _call(context, lambda: self.api.attempts(job_id))
        job.attempt_history.extend(attempt_to_proto(a) for a in attempts)
        return job

    async def GetJobStatus(self, request: pb.GetJobRequest, context: Context) -> pb.JobStatus:
        job = await _call(context, lambda: self.api.get(request.job_id.value))
        return pb.JobStatus(
            job_id=request.job_id,
            state=job.state.value,
            exit_code=job.exit_code or 0,
            has_exit_code=job.exit_code is not None,
            reason=self.api.reason(job),
        )

    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        cursor: int | None = None
        if request.cursor:
            if not request.cursor.isdigit():
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "cursor must be a number")
            cursor = int(request.cursor)
        limit = min(max(request.limit or 100, 1), 1000)
        items, nxt = await _call(
            context, lambda: self.api.list(request.state or None, limit, cursor)
        )
        return pb.ListJobsResponse(
            items=[self._proto(j) for j in items], next=str(nxt) if nxt else ""
        )

    async def CancelJob(self, request: pb.GetJobRequest, context: Context) -> pb.Job:
        return self._proto(await _call(context, lambda: self.api.cancel(request.job_id.value)))

    async def RetryJob(self, request: pb.GetJobRequest, context: Context) -> pb.Job:
        return self._proto(await _call(context, lambda: self.api.retry(request.job_id.value)))

    async def SubscribeLogs(
        self, request: pb.SubscribeLogsRequest, context: Context
    ) -> AsyncIterator[pb.LogEvent]:
        job_id = request.job_id.value
        _, attempt = await _call(context, lambda: self.api.resolve_attempt(job_id, None))
        offset = request.since_offset
        if request.tail_bytes:
            size = self.api.hub.size(job_id, attempt)
            offset = max(offset, size - request.tail_bytes)
        pieces: Any = self.api.follow(job_id, attempt, offset, wait=request.follow)
        async for piece in pieces:
            if isinstance(piece, LogPiece):
                yield pb.LogEvent(offset=piece.offset, data=piece.data)
            else:
                yield pb.LogEvent(
                    offset=offset,
                    end=True,
                    state=piece.state.value,
                    exit_code=piece.exit_code or 0,
                )
            offset = piece.offset if isinstance(piece, LogPiece) else offset
