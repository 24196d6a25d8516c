"""REST API (JSON) and the SSE log stream, served by uvicorn in the server's event loop."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

import hodei
from hodei.domain.jobs import Job, JobSpec, parse_size
from hodei.errors import HodeiError, ValidationError
from hodei.server.api.http.access import actor_of, principal_of
from hodei.server.api.http.body_limit import BodyLimit
from hodei.server.api.views import (
    attempt_to_dict,
    iso,
    job_to_dict,
    launching_to_dict,
    worker_to_dict,
)
from hodei.server.core.metrics import Metrics
from hodei.server.core.service import JobsApi, LogPiece
from hodei.server.security.audit import Auditor

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
MAX_INT = (1 << 63) - 1  # offsets and cursors: what a 64-bit store column holds
MAX_ATTEMPT = 1 << 31
Text = Annotated[str, Field(max_length=256 * 1024)]


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
    priority: int = Field(0, ge=-1_000_000, le=1_000_000)
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
            priority=self.priority,
            queued_by=queued_by(self.queued_by),
        )


MAX_BATCH = 1000


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    jobs: list[SubmitRequest] = Field(min_length=1, max_length=MAX_BATCH)


class SecretBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str = Field(min_length=1, max_length=64 * 1024)


class OtpRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: dict[str, str] = Field(default_factory=dict)
    ttl_s: float = Field(600.0, gt=0, le=7 * 86400)


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HodeiError)
    async def hodei_error(_: Request, exc: HodeiError) -> JSONResponse:
        code = type(exc).__name__.removesuffix("Error").lower() or "error"
        return error(exc.status, {"notfound": "not_found"}.get(code, code), exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors()[:5]:
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
        return error(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error(500, "internal", "internal error (see the server log)")


def utf8_cut(data: bytes) -> int:
    """Length of the longest prefix of `data` that does not end inside a UTF-8 sequence."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)
        if byte >= 0xC0:  # a lead byte: is its sequence complete?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= need else len(data) - back
    return len(data)


async def sse_events(pieces: AsyncIterator[LogPiece | Job], start: int) -> AsyncIterator[bytes]:
    pending = b""
    offset = start
    async for piece in pieces:
        if isinstance(piece, LogPiece):
            pending += piece.data
            cut = utf8_cut(pending)
            if cut:
                offset += cut
                yield _log_event(offset, pending[:cut])
                pending = pending[cut:]
            continue
        if pending:
            offset += len(pending)
            yield _log_event(offset, pending)
        end = {
            "state": piece.state.value,
            "exit_code": piece.exit_code,
            "reason": piece.reason,
            "attempt": piece.attempts,
        }
        yield b"id: %d\nevent: end\ndata: %s\n\n" % (offset, orjson.dumps(end))


def _log_event(offset: int, data: bytes) -> bytes:
    text = data.decode("utf-8", "replace")
    return b"id: %d\nevent: log\ndata: %s\n\n" % (offset, orjson.dumps(text))


def _parse_resume(last_event_id: str | None, offset: int | None) -> int:
    if last_event_id is not None:
        try:
            value = int(last_event_id.strip())
        except ValueError:
            raise ValidationError("Last-Event-ID must be a byte offset (an integer)") from None
        if not 0 <= value <= MAX_INT:
            raise ValidationError(f"Last-Event-ID must be between 0 and {MAX_INT}")
        return value
    return offset or 0


def create_http_app(api: JobsApi, services: Any, metrics: Metrics, started_at: float) -> FastAPI:
    app = FastAPI(title="Hodei Jobs", version=hodei.__version__)
    _install_error_handlers(app)

    app.add_middleware(BodyLimit, limit=MAX_BODY)

    auditor: Auditor = services.auditor

    def job_json(job: Job) -> dict[str, Any]:
        return job_to_dict(job, api.reason(job))

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": hodei.__version__, "uptime_s": time.time() - started_at}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/api/v1/jobs", status_code=201)
    async def submit(
        body: SubmitRequest,
        request: Request,
        response: Response,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> dict[str, Any]:
        key = body.idempotency_key or idempotency_key  # the body's, else the header's
        if body.idempotency_key and idempotency_key and body.idempotency_key != idempotency_key:
            raise ValidationError("Idempotency-Key header and body idempotency_key differ")
        principal = principal_of(request)
        spec = body.to_spec(principal.queued_by)
        job, created = await api.submit_once(spec, body.id, key)
        if not created:
            response.status_code = 200  # the job an earlier submit with this key created
        else:
            await auditor.record(principal.actor, "job.submit", job.id, job.spec.name)
        return job_json(job)

    @app.post("/api/v1/jobs/batch", status_code=201)
    async def submit_batch(body: BatchRequest, request: Request) -> dict[str, Any]:
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
        for result in await api.submit_many(requests):
            if isinstance(result, HodeiError):
                code = type(result).__name__.removesuffix("Error").lower() or "error"
                items.append({"error": {"code": code, "message": result.message}})
                continue
            job, created = result
            if created:
                created_ids.append(job.id)
            items.append({**job_json(job), "created": created})
        detail = f"in a batch of {len(body.jobs)}"
        await auditor.record_many(principal.actor, "job.submit", created_ids, detail)
        return {"items": items}

    @app.get("/api/v1/jobs")
    async def list_jobs(
        state: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
    ) -> dict[str, Any]:
        items, nxt = await api.list(state, limit, cursor)
        return {"items": [job_json(j) for j in items], "next": str(nxt) if nxt else None}

    @app.get("/api/v1/jobs/{job_id}")
    async def get_job(job_id: str) -> dict[str, Any]:
        job = job_json(await api.get(job_id))
        job["attempt_history"] = [attempt_to_dict(a) for a in await api.attempts(job_id)]
        return job

    @app.get("/api/v1/jobs/{job_id}/attempts")
    async def attempts(job_id: str) -> dict[str, Any]:
        return {"items": [attempt_to_dict(a) for a in await api.attempts(job_id)]}

    @app.post("/api/v1/jobs/{job_id}/cancel")
    async def cancel(job_id: str, request: Request) -> dict[str, Any]:
        job = await api.cancel(job_id)
        await auditor.record(actor_of(request), "job.cancel", job_id)
        return job_json(job)

    @app.post("/api/v1/jobs/{job_id}/retry")
    async def retry(job_id: str, request: Request) -> dict[str, Any]:
        job = await api.retry(job_id)
        await auditor.record(actor_of(request), "job.retry", job_id, f"attempt {job.attempts}")
        return job_json(job)

    @app.get("/api/v1/jobs/{job_id}/logs")
    async def logs(
        job_id: str,
        attempt: Annotated[int | None, Query(ge=1, le=MAX_ATTEMPT)] = None,
        offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
    ) -> Response:
        data = await api.read_log(job_id, attempt, offset)
        return Response(data, media_type="text/plain; charset=utf-8")

    @app.get("/api/v1/jobs/{job_id}/logs/stream")
    async def stream(
        job_id: str,
        attempt: Annotated[int | None, Query(ge=1, le=MAX_ATTEMPT)] = None,
        offset: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        start = _parse_resume(last_event_id, offset)
        await api.resolve_attempt(job_id, attempt)  # a 404 before the stream starts
        events = sse_events(api.follow(job_id, attempt, start), start)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)

    _add_admin_routes(app, services)
    return app


def _add_admin_routes(app: FastAPI, services: Any) -> None:
    vault, registry, provisioner, otps = (
        services.vault,
        services.registry,
        services.provisioner,
        services.otps,
    )
    auditor: Auditor = services.auditor

    @app.get("/api/v1/workers")
    async def workers() -> dict[str, Any]:
        items = [worker_to_dict(s) for s in registry.sessions()]
        items += [launching_to_dict(w, provisioner.provider.name) for w in provisioner.launching]
        return {"items": items, "next": None, "provisioning_error": provisioner.last_error}

    @app.post("/api/v1/workers/otp", status_code=201)
    async def new_otp(body: OtpRequest, request: Request) -> dict[str, Any]:
        import secrets as _secrets

        worker_id = f"static-{_secrets.token_hex(4)}"
        otp = otps.issue(worker_id, body.ttl_s, body.labels)
        await auditor.record(actor_of(request), "worker.otp", worker_id)
        return {"worker_id": worker_id, "otp": otp, "expires_at": iso(time.time() + body.ttl_s)}

    @app.put("/api/v1/secrets/{name}")
    async def put_secret(name: str, body: SecretBody, request: Request) -> dict[str, Any]:
        await vault.put(name, body.value)
        await auditor.record(actor_of(request), "secret.set", name)
        return {"name": name}

    @app.get("/api/v1/secrets")
    async def list_secrets() -> dict[str, Any]:
        items = [{"name": r.name, "updated_at": iso(r.updated_at)} for r in await vault.list()]
        return {"items": items, "next": None}

    @app.delete("/api/v1/secrets/{name}", status_code=204)
    async def delete_secret(name: str, request: Request) -> Response:
        await vault.delete(name)
        await auditor.record(actor_of(request), "secret.delete", name)
        return Response(status_code=204)
