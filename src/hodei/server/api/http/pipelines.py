"""REST routes of pipeline runs: start (or only check) a file, list, show, cancel, retry,
approve a manual step, and follow a run's changes as Server-Sent Events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from hodei.domain.pipelines import PipelineError, check_pipeline
from hodei.domain.pipelines.runs import RunState, valid_run_id
from hodei.errors import NotFoundError, ValidationError
from hodei.server.api.http.deps import MAX_INT, HttpServices, Services, actor_of
from hodei.server.api.http.errors import bounded, error_body
from hodei.server.api.pipeline_views import (
    issues_to_list,
    run_summary,
    run_to_dict,
    with_counts,
)
from hodei.server.core.bus import EventBus, RunChanged
from hodei.server.core.pipelines import Pipelines

MAX_SOURCE = 1 << 20  # the largest file the domain reads (Limits.max_bytes)
Source = Annotated[str, Field(min_length=1, max_length=MAX_SOURCE)]
ParamValue = Annotated[str, Field(max_length=32 * 1024)] | int | bool

router = APIRouter()


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Source  # the pipeline file's text
    filename: str = Field("pipeline.yaml", min_length=1, max_length=255)
    params: dict[Annotated[str, Field(max_length=128)], ParamValue] = Field(
        default_factory=dict, max_length=256
    )
    no_cache: bool = False


class ValidateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Source
    filename: str = Field("pipeline.yaml", min_length=1, max_length=255)


class ApproveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: str = Field(min_length=1, max_length=64)


def _pipelines(services: HttpServices) -> Pipelines:
    return services.pipelines


def _invalid(exc: PipelineError) -> JSONResponse:
    body = error_body("invalid_request", bounded(exc.message))
    body["error"]["issues"] = issues_to_list(exc.issues)
    return JSONResponse(body, status_code=ValidationError.status)


def _run_id(run_id: str) -> str:
    if not valid_run_id(run_id):
        raise NotFoundError(f"no pipeline run {run_id[:40]!r}")
    return run_id


async def _view(pipelines: Pipelines, run_id: str) -> dict[str, Any]:
    run, steps = await pipelines.get(_run_id(run_id))
    return run_to_dict(run, steps, pipelines.engine.dag_of(run))


@router.post("/api/v1/pipelines", status_code=201, response_model=None)
async def start(body: RunRequest, request: Request, services: Services) -> Any:
    pipelines = _pipelines(services)
    try:
        run, steps = await pipelines.run(
            body.source,
            {key: value for key, value in body.params.items()},  # type: ignore[misc]
            filename=body.filename,
            queued_by=actor_of(request),
            no_cache=body.no_cache,
        )
    except PipelineError as exc:
        return _invalid(exc)
    return run_to_dict(run, steps, pipelines.engine.dag_of(run))


@router.post("/api/v1/pipelines/validate")
async def validate(body: ValidateRequest, services: Services) -> dict[str, Any]:
    pipelines = _pipelines(services)
    pipeline, issues = await asyncio.to_thread(check_pipeline, body.source, limits=pipelines.limits)
    answer: dict[str, Any] = {"valid": pipeline is not None, "issues": issues_to_list(issues)}
    if pipeline is not None:
        answer["name"] = pipeline.name
        answer["steps"] = len(pipeline.steps)
    return answer


@router.get("/api/v1/pipelines")
async def list_runs(
    services: Services,
    state: Annotated[RunState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
) -> dict[str, Any]:
    pipelines = _pipelines(services)
    runs, after = await pipelines.list(state, limit, cursor)
    # Each run with its step counts (done of total in a table): one read of its step rows.
    items = [with_counts(run_summary(run), await pipelines.store.run_steps(run.id)) for run in runs]
    return {"items": items, "next": after}


@router.get("/api/v1/pipelines/{run_id}")
async def show(run_id: str, services: Services) -> dict[str, Any]:
    return await _view(_pipelines(services), run_id)


@router.get("/api/v1/pipelines/{run_id}/steps")
async def steps(run_id: str, services: Services) -> dict[str, Any]:
    view = await _view(_pipelines(services), run_id)
    return {"items": view["steps"]}


@router.get("/api/v1/pipelines/{run_id}/steps/{step_id}")
async def step(run_id: str, step_id: str, services: Services) -> dict[str, Any]:
    view = await _view(_pipelines(services), run_id)
    for row in view["steps"]:
        if row["id"] == step_id:
            return dict(row)
    matching = [row for row in view["steps"] if row["step"] == step_id]
    if len(matching) == 1:
        return dict(matching[0])
    if matching:
        ids = ", ".join(row["id"] for row in matching)
        raise ValidationError(f"step {step_id!r} has several jobs: {bounded(ids)}")
    raise NotFoundError(f"run {run_id} has no step {step_id[:64]!r}")


@router.post("/api/v1/pipelines/{run_id}/cancel")
async def cancel(run_id: str, request: Request, services: Services) -> dict[str, Any]:
    pipelines = _pipelines(services)
    await pipelines.cancel(_run_id(run_id), actor_of(request))
    return await _view(pipelines, run_id)


@router.post("/api/v1/pipelines/{run_id}/retry")
async def retry(run_id: str, request: Request, services: Services) -> dict[str, Any]:
    pipelines = _pipelines(services)
    await pipelines.retry(_run_id(run_id), actor_of(request))
    return await _view(pipelines, run_id)


@router.post("/api/v1/pipelines/{run_id}/approve")
async def approve(
    run_id: str, body: ApproveRequest, request: Request, services: Services
) -> dict[str, Any]:
    pipelines = _pipelines(services)
    await pipelines.approve(_run_id(run_id), body.step, actor_of(request))
    return await _view(pipelines, run_id)


@router.get("/api/v1/pipelines/{run_id}/events")
async def events(
    run_id: str,
    services: Services,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """`run` events, each the whole run as `GET .../{run}` shows it (id: the run's version),
    at once and on every change; a last `end` event when the run has ended. A client that
    reconnects gets the run as it is now (nothing to replay: every event is the whole state)."""
    pipelines = _pipelines(services)
    first = await _view(pipelines, run_id)
    del last_event_id
    stream = _run_events(pipelines, services.bus, run_id, first)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


async def _run_events(
    pipelines: Pipelines, bus: EventBus, run_id: str, first: dict[str, Any]
) -> AsyncIterator[bytes]:
    changed = asyncio.Event()
    unsubscribe = bus.subscribe(RunChanged, lambda e: changed.set() if e.run.id == run_id else None)
    try:
        view = first
        yield _event("run", view)
        while view["state"] in ("running", "waiting"):
            try:
                # A change on another server sharing the store is not heard here: look again
                # now and then all the same.
                await asyncio.wait_for(changed.wait(), 5.0)
            except TimeoutError:
                yield b": keep-alive\n\n"
            changed.clear()
            latest = await _view(pipelines, run_id)
            if latest != view:
                view = latest
                yield _event("run", view)
        yield _event("end", view)
    finally:
        unsubscribe()


def _event(kind: str, view: dict[str, Any]) -> bytes:
    data = orjson.dumps(view).decode()
    return f"event: {kind}\nid: {view['version']}\ndata: {data}\n\n".encode()
