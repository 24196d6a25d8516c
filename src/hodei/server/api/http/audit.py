"""REST route of the audit trail (admin only: see domain.access)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from hodei.server.api.http.deps import Services
from hodei.server.api.views import audit_to_dict

router = APIRouter()


@router.get("/api/v1/audit")
async def audit(
    services: Services,
    action: Annotated[str | None, Query(max_length=100)] = None,
    target: Annotated[str | None, Query(max_length=1000)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[int | None, Query(ge=0)] = None,
) -> dict[str, Any]:
    items, nxt = await services.access.list_audit(limit, cursor, action, target)
    return {"items": [audit_to_dict(e) for e in items], "next": str(nxt) if nxt else None}
