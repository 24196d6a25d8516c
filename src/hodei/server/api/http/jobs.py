"""REST routes of jobs: submit (one or a batch), list (filtered), their changes live (SSE), get,
attempts, cancel and retry."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from hodei.domain.job_filter import job_filter, parse_labels
from hodei.domain.jobs import MAX_NAME, Job, JobSpec, parse_size
from hodei.errors import HodeiError, ValidationError
from hodei.server.api.http.deps import MAX_INT, Services, actor_of, principal_of
from hodei.server.api.http.errors import describe
from hodei.server.api.views import attempt_to_dict, job_to_dict
from hodei.server.core.job_feed import RESYNC, JobFeed
from hodei.server.core.service import JobsApi, parse_state

MAX_BATCH = 1000
KEEP_ALIVE_S = 15.0  # a comment on a quiet event stream, before proxies call it idle
Text = Annotated[str, Field(max_length=256 * 1024)]

router = APIRouter()


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: Text = Field(min_length=1)
    arguments: list[Text] = Field(default_factory=list, max_length=4096)
    name: str = Field("", max_length=200)
    labels: dict[str, str] = Field(default_factory=dict)
    env: dict[str, Text] = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list, max_length=64)
    cpu: float = Field(0.0, ge=0, le=1024)
    memory_bytes: int | str = 0
    timeout_s: float = Field(0.0, ge=0)
    max_retries: int = Field(0, ge=0, le=100)
    # Requeues after platform faults (None: the server's default); no_infra_retry: none.
    infra_retries: int | None = Field(None, ge=0, le=100)
    no_infra_retry: bool = False
    priority: int = Field(0, ge=-1_000_000, le=1_000_000)
    # The container image to run in (absent: the provider's worker image).
    image: str | None = Field(None, max_length=255)
    id: str | None = Field(None, max_length=64)
    queued_by: str = Field("", max_length=200)
    idempotency_key: str | None = Field(None, max_length=200)

    def to_spec(self, queued_by: Callable[[str], str]) -> JobSpec:
        """`queued_by` maps what the request claims to what is recorded (Principal.queued_by)."""
        memory = self.memory_bytes
        return JobSpec(
            command=self.command,
            arguments=tuple(self.arguments),
            name=self.name,
            env=dict(self.env),
            secrets=tuple(self.secrets),
            labels=dict(self.labels),
            cpu=self.cpu,
            memory_bytes=parse_size(memory) if isinstance(memory, str) else memory,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
            infra_retries=self.infra_retries,
            no_infra_retry=self.no_infra_retry,
            priority=self.priority,
            queued_by=queued_by(self.queued_by),
            image=self.image,
        )


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    jobs: list[SubmitRequest] = Field(min_length=1, max_length=MAX_BATCH)


def job_json(api: JobsApi, job: Job) -> dict[str, Any]:
    return job_to_dict(job, api.reason(job))


@router.post("/api/v1/jobs", status_code=201)
async def submit(
    body: SubmitRequest,
    request: Request,
    response: Response,
    services: Services,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    traceparent: Annotated[str | None, Header(max_length=512)] = None,
) -> dict[str, Any]:
    key = body.idempotency_key or idempotency_key  # the body's, else the header's
    if body.idempotency_key and idempotency_key and body.idempotency_key != idempotency_key:
        raise ValidationError("Idempotency-Key header and body idempotency_key differ")
    principal = principal_of(request)
    spec = body.to_spec(principal.queued_by)
    # A W3C `traceparent` header: the job's trace continues the caller's.
    job, created = await services.api.submit_once(spec, body.id, key, traceparent)
    if not created:
        response.status_code = 200  # the job an earlier submit with this key created
    else:
        await services.auditor.record(principal.actor, "job.submit", job.id, job.spec.name)
    return job_json(services.api, job)


@router.post("/api/v1/jobs/batch", status_code=201)
async def submit_batch(
    body: BatchRequest,
    request: Request,
    services: Services,
    traceparent: Annotated[str | None, Header(max_length=512)] = None,
) -> dict[str, Any]:
    """Up to 1,000 jobs in one request and one group commit. The answer lists, in order,
    each job (`created` false for a known idempotency key) or its own error."""
    principal = principal_of(request)
    requests = []
    for index, item in enumerate(body.jobs):
        if item.id is not None:
            raise ValidationError(f"jobs[{index}]: a batch cannot name job ids")
        requests.append((item.to_spec(principal.queued_by), item.idempotency_key))
    items: list[dict[str, Any]] = []
    created_ids: list[str] = []
    for result in await services.api.submit_many(requests, traceparent):
        if isinstance(result, HodeiError):
            items.append(describe(result)[1])  # the item's error, the request still succeeds
            continue
        job, created = result
        if created:
            created_ids.append(job.id)
        items.append({**job_json(services.api, job), "created": created})
    detail = f"in a batch of {len(body.jobs)}"
    await services.auditor.record_many(principal.actor, "job.submit", created_ids, detail)
    return {"items": items}


Name = Annotated[str | None, Query(max_length=MAX_NAME)]
Labels = Annotated[list[str] | None, Query(description="key=value; repeat: all must match")]
RunId = Annotated[str | None, Query(max_length=64, description="a pipeline run's id")]


@router.get("/api/v1/jobs")
async def list_jobs(
    services: Services,
    state: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
    name: Name = None,
    label: Labels = None,
    pipeline: RunId = None,
) -> dict[str, Any]:
    """Newest first; only jobs meeting every filter given: `name` a substring of the job's
    name (ASCII letters in either case), each `label=k=v`, `pipeline` a run's step jobs."""
    labels = parse_labels(label or ())
    items, nxt = await services.api.list(
        state, limit, cursor, name=name, labels=labels, pipeline=pipeline
    )
    return {"items": [job_json(services.api, j) for j in items], "next": str(nxt) if nxt else None}


# Before /api/v1/jobs/{job_id}, which would take "events" for a job id.
@router.get("/api/v1/jobs/events")
async def job_events(
    services: Services,
    state: str | None = None,
    name: Name = None,
    label: Labels = None,
    pipeline: RunId = None,
) -> StreamingResponse:
    """SSE: `ready` once listening, then a `job` event (the job as GET /api/v1/jobs/{id}
    shows it, without attempt_history) on every change of a job the filters concern; with
    `state`, also once when a job leaves that state (its new state tells the client to drop
    it). `resync` when the client fell behind: read the list again. A comment every 15 s."""
    wanted = job_filter(parse_state(state), name, parse_labels(label or ()), pipeline)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    stream = _job_events(services.api, JobFeed(services.bus, wanted))
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


async def _job_events(api: JobsApi, feed: JobFeed) -> AsyncIterator[bytes]:
    with feed:
        yield b"event: ready\ndata: {}\n\n"
        while True:
            batch = await feed.next(KEEP_ALIVE_S)
            if batch is None:
                yield b": keep-alive\n\n"
            elif batch is RESYNC:
                yield b"event: resync\ndata: {}\n\n"
            else:
                for start in range(0, len(batch), 100):  # the loop's other work runs between
                    yield b"".join(
                        b"event: job\ndata: %s\n\n" % orjson.dumps(job_json(api, job))
                        for job in batch[start : start + 100]
                    )


@router.get("/api/v1/jobs/{job_id}")
async def get_job(job_id: str, services: Services) -> dict[str, Any]:
    api = services.api
    job = job_json(api, await api.get(job_id))
    job["attempt_history"] = [attempt_to_dict(a) for a in await api.attempts(job_id)]
    return job


@router.get("/api/v1/jobs/{job_id}/attempts")
async def attempts(job_id: str, services: Services) -> dict[str, Any]:
    return {"items": [attempt_to_dict(a) for a in await services.api.attempts(job_id)]}


@router.post("/api/v1/jobs/{job_id}/cancel")
async def cancel(job_id: str, request: Request, services: Services) -> dict[str, Any]:
    job = await services.api.cancel(job_id)
    await services.auditor.record(actor_of(request), "job.cancel", job_id)
    return job_json(services.api, job)


@router.post("/api/v1/jobs/{job_id}/retry")
async def retry(job_id: str, request: Request, services: Services) -> dict[str, Any]:
    job = await services.api.retry(job_id)
    await services.auditor.record(actor_of(request), "job.retry", job_id, f"attempt {job.attempts}")
    return job_json(services.api, job)
