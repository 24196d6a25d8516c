"""gRPC JobExecutionService: the client job API, in the seeds' shape (hodei.v1 prefix)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from hodei._proto.hodei.v1 import jobs_pb2 as pb
from hodei._proto.hodei.v1 import jobs_pb2_grpc
from hodei.domain.access import Principal, Role
from hodei.domain.job_filter import parse_labels
from hodei.domain.jobs import Job, JobSpec, attempt_over
from hodei.server.api.grpc.calls import Context, allow, call
from hodei.server.api.views import attempt_to_proto, job_to_proto
from hodei.server.core.service import JobsApi, LogPiece
from hodei.server.security.api_auth import ApiAuth
from hodei.server.security.audit import Auditor

MAX_OFFSET = (1 << 63) - 1


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
        infra_retries=d.infra_retries if d.HasField("infra_retries") else None,
        no_infra_retry=d.no_infra_retry,
        priority=d.priority,
        image=d.image or None,
        queued_by=queued_by,
    )


class JobService(jobs_pb2_grpc.JobExecutionServiceServicer):
    def __init__(self, api: JobsApi, auth: ApiAuth, auditor: Auditor) -> None:
        self.api = api
        self.auth = auth
        self.auditor = auditor

    async def _allow(self, context: Context, needed: Role, what: str) -> Principal:
        return await allow(self.auth, context, needed, what)

    def _proto(self, job: Job) -> pb.Job:
        return job_to_proto(job, self.api.reason(job))

    async def QueueJob(self, request: pb.QueueJobRequest, context: Context) -> pb.QueueJobResponse:
        principal = await self._allow(context, Role.SUBMITTER, "grpc QueueJob")
        d = request.job_definition
        spec = spec_from_definition(d, principal.queued_by(request.queued_by))
        key = request.idempotency_key or None
        # gRPC metadata `traceparent` (W3C): the job's trace continues the caller's.
        parent = _traceparent(context)
        job, created = await call(
            context, lambda: self.api.submit_once(spec, d.job_id.value or None, key, parent)
        )
        message = f"job {job.id} queued" if created else f"job {job.id} (same idempotency key)"
        if created:
            await self.auditor.record(principal.actor, "job.submit", job.id, job.spec.name)
        return pb.QueueJobResponse(
            success=True, message=message, job=self._proto(job), created=created
        )

    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.Job:
        await self._allow(context, Role.VIEWER, "grpc GetJob")
        job_id = request.job_id.value
        job = self._proto(await call(context, lambda: self.api.get(job_id)))
        attempts = await call(context, lambda: self.api.attempts(job_id))
        job.attempt_history.extend(attempt_to_proto(a) for a in attempts)
        return job

    async def GetJobStatus(self, request: pb.GetJobRequest, context: Context) -> pb.JobStatus:
        await self._allow(context, Role.VIEWER, "grpc GetJobStatus")
        job = await call(context, lambda: self.api.get(request.job_id.value))
        return pb.JobStatus(
            job_id=request.job_id,
            state=job.state.value,
            exit_code=job.exit_code or 0,
            has_exit_code=job.exit_code is not None,
            reason=self.api.reason(job),
        )

    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        await self._allow(context, Role.VIEWER, "grpc ListJobs")
        cursor: int | None = None
        if request.cursor:
            if not request.cursor.isdigit() or len(request.cursor) > 18:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "cursor must be a number")
            cursor = int(request.cursor)
        limit = min(max(request.limit or 100, 1), 1000)

        async def page() -> tuple[list[Job], int | None]:
            return await self.api.list(
                request.state or None,
                limit,
                cursor,
                name=request.name or None,
                labels=parse_labels(request.labels),
                pipeline=request.pipeline or None,
            )

        items, nxt = await call(context, page)
        return pb.ListJobsResponse(
            items=[self._proto(j) for j in items], next=str(nxt) if nxt else ""
        )

    async def CancelJob(self, request: pb.GetJobRequest, context: Context) -> pb.Job:
        principal = await self._allow(context, Role.SUBMITTER, "grpc CancelJob")
        job = await call(context, lambda: self.api.cancel(request.job_id.value))
        await self.auditor.record(principal.actor, "job.cancel", job.id)
        return self._proto(job)

    async def RetryJob(self, request: pb.GetJobRequest, context: Context) -> pb.Job:
        principal = await self._allow(context, Role.SUBMITTER, "grpc RetryJob")
        job = await call(context, lambda: self.api.retry(request.job_id.value))
        await self.auditor.record(principal.actor, "job.retry", job.id, f"attempt {job.attempts}")
        return self._proto(job)

    async def SubscribeLogs(
        self, request: pb.SubscribeLogsRequest, context: Context
    ) -> AsyncIterator[pb.LogEvent]:
        await self._allow(context, Role.VIEWER, "grpc SubscribeLogs")
        job_id = request.job_id.value
        _, attempt = await call(context, lambda: self.api.resolve_attempt(job_id, None))
        offset = min(request.since_offset, MAX_OFFSET)  # past the end: nothing to read
        if request.tail_bytes:
            size = self.api.hub.size(job_id, attempt)
            offset = max(offset, size - request.tail_bytes)
        pieces: Any = self.api.follow(job_id, attempt, offset, wait=request.follow)
        async for piece in pieces:
            if isinstance(piece, LogPiece):
                yield pb.LogEvent(offset=piece.offset, data=piece.data)
            elif attempt_over(piece, attempt):  # without follow, a running job has not ended
                yield pb.LogEvent(
                    offset=offset,
                    end=True,
                    state=piece.state.value,
                    exit_code=piece.exit_code or 0,
                )
            offset = piece.offset if isinstance(piece, LogPiece) else offset


def _traceparent(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "traceparent" and isinstance(value, str):
            return value[:512]
    return None
