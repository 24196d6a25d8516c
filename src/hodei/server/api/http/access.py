"""REST routes for API tokens and the audit trail (admin only: see domain.access)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from hodei.domain.access import DEV_PRINCIPAL, AuditEntry, Principal, TokenRecord, parse_role
from hodei.server.api.views import iso
from hodei.server.security.api_auth import ApiAuth
from hodei.server.security.audit import Auditor


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str = Field(max_length=20)
    name: str = Field("", max_length=200)


def principal_of(request: Request) -> Principal:
    """Who the auth middleware let in (dev mode has no middleware state)."""
    found = getattr(request.state, "principal", None)
    return found if isinstance(found, Principal) else DEV_PRINCIPAL


def actor_of(request: Request) -> str:
    return principal_of(request).actor


def token_to_dict(token: TokenRecord) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "role": token.role.value,
        "created_at": iso(token.created_at),
        "revoked_at": iso(token.revoked_at),
    }


def audit_to_dict(entry: AuditEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "at": iso(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "detail": entry.detail,
    }


def add_access_routes(app: FastAPI, auth: ApiAuth, auditor: Auditor) -> None:
    store = auth.store

    @app.post("/api/v1/tokens", status_code=201)
    async def create_token(body: TokenRequest, request: Request) -> dict[str, Any]:
        record, token = await auth.create(parse_role(body.role), body.name)
        await auditor.record(actor_of(request), "token.create", record.id, record.role.value)
        return {**token_to_dict(record), "token": token}  # the only time it is shown

    @app.get("/api/v1/tokens")
    async def list_tokens() -> dict[str, Any]:
        return {"items": [token_to_dict(t) for t in await store.list_tokens()], "next": None}

    @app.post("/api/v1/tokens/{token_id}/revoke")
    async def revoke_token(token_id: str, request: Request) -> dict[str, Any]:
        record = await auth.revoke(token_id, auditor.now())
        await auditor.record(actor_of(request), "token.revoke", token_id)
        return token_to_dict(record)

    @app.get("/api/v1/audit")
    async def audit(
        action: Annotated[str | None, Query(max_length=100)] = None,
        target: Annotated[str | None, Query(max_length=1000)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[int | None, Query(ge=0)] = None,
    ) -> dict[str, Any]:
        items, nxt = await store.list_audit(limit, cursor, action, target)
        return {"items": [audit_to_dict(e) for e in items], "next": str(nxt) if nxt else None}
