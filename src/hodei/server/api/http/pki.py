"""REST routes of the PKI: agent enrollment (HTTPS, OTP + CSR) and the admin operations.

Enrollment is here, not on the gRPC port, because that port requires a client certificate (see
server.security.mtls) and an agent has none yet; the HTTPS listener authenticates the server
to the agent (it trusts the CA it was given), and the single-use OTP authenticates the agent.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from hodei.errors import AuthError, ConflictError
from hodei.security import MAX_CSR
from hodei.server.api.http.deps import HttpServices, Services
from hodei.server.api.views import cert_to_dict, iso

if TYPE_CHECKING:  # only with --tls is it loaded (cryptography's x509 costs memory)
    from hodei.server.security.agent_pki import AgentAuthority

router = APIRouter()


class EnrollRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    otp: str = Field(min_length=1, max_length=512)
    csr: str = Field(min_length=1, max_length=MAX_CSR)


class RevokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str = Field(min_length=1, max_length=256)


def tls_on(services: HttpServices) -> AgentAuthority:
    if services.authority is None:
        raise ConflictError("this server runs without --tls: it issues no certificates")
    return services.authority


@router.post("/api/v1/agents/enroll", status_code=201)
async def enroll(body: EnrollRequest, request: Request, services: Services) -> dict[str, Any]:
    auth = tls_on(services)
    auditor = services.auditor
    source = request.client.host if request.client else ""
    try:
        issued = auth.enroll(body.otp, body.csr.encode(), source)
    except AuthError as exc:
        await auditor.denied(f"peer:{source}", "worker.refused", "", exc.message)
        raise
    worker = issued.info.worker_id
    await auditor.record(f"worker:{worker}", "worker.enroll", worker, issued.info.serial)
    return {
        "worker_id": issued.info.worker_id,
        "serial": issued.info.serial,
        "certificate": issued.cert_pem.decode(),
        "ca": auth.ca_pem.decode(),
        "not_after": iso(issued.info.not_after),
        "not_after_ms": int(issued.info.not_after * 1000),
    }


@router.get("/api/v1/pki/certs")
async def certs(services: Services) -> dict[str, Any]:
    now = time.time()
    items = [cert_to_dict(r, now) for r in tls_on(services).registry.records()]
    return {"items": items, "next": None}


@router.post("/api/v1/pki/revoke")
async def revoke(body: RevokeRequest, services: Services) -> dict[str, Any]:
    now = time.time()
    return {"items": [cert_to_dict(r, now) for r in tls_on(services).revoke(body.target)]}
