"""REST routes of API tokens (admin only: see domain.access)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from hodei.domain.access import parse_role
from hodei.server.api.http.deps import Services, actor_of
from hodei.server.api.views import token_to_dict

router = APIRouter()


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str = Field(max_length=20)
    name: str = Field("", max_length=200)


@router.post("/api/v1/tokens", status_code=201)
async def create_token(body: TokenRequest, request: Request, services: Services) -> dict[str, Any]:
    record, token = await services.auth.create(parse_role(body.role), body.name)
    await services.auditor.record(actor_of(request), "token.create", record.id, record.role.value)
    return {**token_to_dict(record), "token": token}  # the only time it is shown


@router.get("/api/v1/tokens")
async def list_tokens(services: Services) -> dict[str, Any]:
    tokens = await services.access.list_tokens()
    return {"items": [token_to_dict(t) for t in tokens], "next": None}


@router.post("/api/v1/tokens/{token_id}/revoke")
async def revoke_token(token_id: str, request: Request, services: Services) -> dict[str, Any]:
    record = await services.auth.revoke(token_id, services.auditor.now())
    await services.auditor.record(actor_of(request), "token.revoke", token_id)
    return token_to_dict(record)
