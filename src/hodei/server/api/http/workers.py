"""REST routes of workers: the connected and provisioning ones, and OTPs for static agents."""

from __future__ import annotations

import secrets
import time
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from hodei.server.api.http.deps import Services, actor_of
from hodei.server.api.views import iso, launching_to_dict, worker_to_dict

router = APIRouter()


class OtpRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: dict[str, str] = Field(default_factory=dict)
    ttl_s: float = Field(600.0, gt=0, le=7 * 86400)


@router.get("/api/v1/workers")
async def workers(services: Services) -> dict[str, Any]:
    provisioner = services.provisioner
    items = [worker_to_dict(s) for s in services.registry.sessions()]
    items += [
        launching_to_dict(w, provisioner.provider.name, image=launch.image)
        for w, launch in provisioner.launching.items()
    ]
    return {"items": items, "next": None, "provisioning_error": provisioner.last_error}


@router.post("/api/v1/workers/otp", status_code=201)
async def new_otp(body: OtpRequest, request: Request, services: Services) -> dict[str, Any]:
    worker_id = f"static-{secrets.token_hex(4)}"
    otp = services.otps.issue(worker_id, body.ttl_s, body.labels)
    await services.auditor.record(actor_of(request), "worker.otp", worker_id)
    return {"worker_id": worker_id, "otp": otp, "expires_at": iso(time.time() + body.ttl_s)}
