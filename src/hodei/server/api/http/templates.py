"""REST routes of job templates: add a version, list, show (with its versions), delete, and
run one with parameter values (submitter, like a job)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from hodei.domain.templates import MAX_TEMPLATE_BYTES
from hodei.server.api.http.deps import Services, actor_of
from hodei.server.api.schedule_views import template_to_dict
from hodei.server.api.views import job_to_dict

router = APIRouter()

ParamValue = Annotated[str, Field(max_length=4096)] | int | bool


class CreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=63)
    source: str = Field(min_length=1, max_length=MAX_TEMPLATE_BYTES)


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: dict[Annotated[str, Field(max_length=128)], ParamValue] = Field(
        default_factory=dict, max_length=64
    )
    version: int | None = Field(None, ge=1)


def _text(value: str | int | bool) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


@router.post("/api/v1/templates", status_code=201)
async def create(body: CreateRequest, request: Request, services: Services) -> dict[str, Any]:
    record = await services.templates.create(body.name, body.source, actor_of(request))
    return template_to_dict(record, source=True)


@router.get("/api/v1/templates")
async def list_templates(services: Services) -> dict[str, Any]:
    return {"items": [template_to_dict(t) for t in await services.templates.listing()]}


@router.get("/api/v1/templates/{name}")
async def show(
    name: str, services: Services, version: Annotated[int | None, Query(ge=1)] = None
) -> dict[str, Any]:
    record = await services.templates.get(name, version)
    out = template_to_dict(record, source=True)
    out["versions"] = [template_to_dict(v) for v in await services.templates.versions(name)]
    return out


@router.post("/api/v1/templates/{name}/run", status_code=201)
async def run(name: str, body: RunRequest, request: Request, services: Services) -> dict[str, Any]:
    params = {k: _text(v) for k, v in body.params.items()}
    launched = await services.templates.run(name, params, actor_of(request), body.version)
    out: dict[str, Any] = {"template": name, "version": launched.template_version}
    if launched.job is not None:
        out["job"] = job_to_dict(launched.job)
    if launched.run is not None:
        out["run_id"] = launched.run.id
    return out


@router.delete("/api/v1/templates/{name}", status_code=204)
async def delete(name: str, request: Request, services: Services) -> None:
    await services.templates.delete(name, actor_of(request))
