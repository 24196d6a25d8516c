"""REST routes of schedules: create, list (with next fire times and the last fires), show,
pause, resume, delete and run-now."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from hodei.server.api.http.deps import Services, actor_of, principal_of
from hodei.server.api.http.jobs import SubmitRequest
from hodei.server.api.schedule_views import fire_to_dict, schedule_to_dict, view_to_dict
from hodei.server.core.schedules import ScheduleRequest

router = APIRouter()

Name = Annotated[str, Field(min_length=1, max_length=63)]
ParamValue = Annotated[str, Field(max_length=4096)] | int | bool


class CreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    cron: str = Field(min_length=1, max_length=200)
    timezone: str = Field("UTC", min_length=1, max_length=64)
    job: SubmitRequest | None = None
    pipeline: str | None = Field(None, min_length=1, max_length=1 << 20)
    template: Name | None = None
    params: dict[Annotated[str, Field(max_length=128)], ParamValue] = Field(
        default_factory=dict, max_length=64
    )
    overlap: str = Field("allow", max_length=16)
    catch_up: str = Field("skip", max_length=16)
    catch_up_limit: int = Field(10, ge=1, le=100)
    starting_deadline_s: float = Field(0.0, ge=0, le=366 * 86400)
    pause_after: int = Field(0, ge=0, le=1000)


class PauseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=500)


def _text(value: str | int | bool) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


@router.post("/api/v1/schedules", status_code=201)
async def create(body: CreateRequest, request: Request, services: Services) -> dict[str, Any]:
    principal = principal_of(request)
    spec = body.job.to_spec(principal.queued_by) if body.job is not None else None
    wanted = ScheduleRequest(
        name=body.name,
        cron=body.cron,
        timezone=body.timezone,
        spec=spec,
        pipeline=body.pipeline,
        template=body.template,
        params={k: _text(v) for k, v in body.params.items()},
        overlap=body.overlap,
        catch_up=body.catch_up,
        catch_up_limit=body.catch_up_limit,
        starting_deadline_s=body.starting_deadline_s,
        pause_after=body.pause_after,
    )
    created = await services.schedules.create(wanted, actor_of(request))
    return view_to_dict(await services.schedules.get(created.name))


@router.get("/api/v1/schedules")
async def list_schedules(
    services: Services, fires: Annotated[int, Query(ge=0, le=20)] = 3
) -> dict[str, Any]:
    views = await services.schedules.listing(fires)
    return {"items": [view_to_dict(v) for v in views]}


@router.get("/api/v1/schedules/{name}")
async def show(
    name: str, services: Services, fires: Annotated[int, Query(ge=1, le=1000)] = 20
) -> dict[str, Any]:
    return view_to_dict(await services.schedules.get(name, fires))


@router.post("/api/v1/schedules/{name}/pause")
async def pause(
    name: str, request: Request, services: Services, body: PauseRequest | None = None
) -> dict[str, Any]:
    reason = body.reason if body is not None else ""
    return schedule_to_dict(await services.schedules.pause(name, actor_of(request), reason))


@router.post("/api/v1/schedules/{name}/resume")
async def resume(name: str, request: Request, services: Services) -> dict[str, Any]:
    return schedule_to_dict(await services.schedules.resume(name, actor_of(request)))


@router.post("/api/v1/schedules/{name}/run", status_code=201)
async def run_now(name: str, request: Request, services: Services) -> dict[str, Any]:
    return fire_to_dict(await services.schedules.run_now(name, actor_of(request)))


@router.delete("/api/v1/schedules/{name}", status_code=204)
async def delete(name: str, request: Request, services: Services) -> None:
    await services.schedules.delete(name, actor_of(request))
