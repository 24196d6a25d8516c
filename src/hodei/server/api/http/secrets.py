"""REST routes of the secret vault: set, list (names only) and delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from hodei.server.api.http.deps import Services, actor_of
from hodei.server.api.views import iso

router = APIRouter()


class SecretBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str = Field(min_length=1, max_length=64 * 1024)


# `{name:path}`: a name with "/" (sent as %2F) reaches the vault, which says why it is invalid.
@router.put("/api/v1/secrets/{name:path}")
async def put_secret(
    name: str, body: SecretBody, request: Request, services: Services
) -> dict[str, Any]:
    await services.vault.put(name, body.value)
    await services.auditor.record(actor_of(request), "secret.set", name)
    return {"name": name}


@router.get("/api/v1/secrets")
async def list_secrets(services: Services) -> dict[str, Any]:
    records = await services.vault.list()
    items = [{"name": r.name, "updated_at": iso(r.updated_at)} for r in records]
    return {"items": items, "next": None}


@router.delete("/api/v1/secrets/{name:path}", status_code=204)
async def delete_secret(name: str, request: Request, services: Services) -> Response:
    await services.vault.delete(name)
    await services.auditor.record(actor_of(request), "secret.delete", name)
    return Response(status_code=204)
