"""REST routes of the PKI: agent enrollment (HTTPS, OTP + CSR) and the admin operations.

Enrollment is here, not on the gRPC port, because that port requires a client certificate (see
server.security.mtls) and an agent has none yet; the HTTPS listener authenticates the server
to the agent (it trusts the CA it was given), and the single-use OTP authenticates the agent.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from hodei.errors import AuthError, ConflictError
from hodei.security import MAX_CSR
from hodei.server.api.views import iso
from hodei.server.security.audit import Auditor

if TYPE_CHECKING:  # only with --tls are these loaded (cryptography's x509 costs memory)
    from hodei.security.pki_files import CertRecord
    from hodei.server.security.agent_pki import AgentAuthority


class EnrollRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    otp: str = Field(min_length=1, max_length=512)
    csr: str = Field(min_length=1, max_length=MAX_CSR)


class RevokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str = Field(min_length=1, max_length=256)


def record_to_dict(record: CertRecord, now: float) -> dict[str, Any]:
    return {
        "serial": record.serial,
        "worker_id": record.worker_id,
        "state": record.state(now),
        "issued_at": iso(record.issued_at),
        "not_after": iso(record.not_after),
        "revoked_at": iso(record.revoked_at) if record.revoked_at is not None else None,
    }


def add_pki_routes(
    app: FastAPI, authority: AgentAuthority | None, auditor: Auditor | None = None
) -> None:
    def tls_on() -> AgentAuthority:
        if authority is None:
            raise ConflictError("this server runs without --tls: it issues no certificates")
        return authority

    @app.post("/api/v1/agents/enroll", status_code=201)
    async def enroll(body: EnrollRequest, request: Request) -> dict[str, Any]:
        auth = tls_on()
        source = request.client.host if request.client else ""
        try:
            issued = auth.enroll(body.otp, body.csr.encode(), source)
        except AuthError as exc:
            if auditor is not None:
                await auditor.denied(f"peer:{source}", "worker.refused", "", exc.message)
            raise
        if auditor is not None:
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

    @app.get("/api/v1/pki/certs")
    async def certs() -> dict[str, Any]:
        now = time.time()
        items = [record_to_dict(r, now) for r in tls_on().registry.records()]
        return {"items": items, "next": None}

    @app.post("/api/v1/pki/revoke")
    async def revoke(body: RevokeRequest) -> dict[str, Any]:
        now = time.time()
        return {"items": [record_to_dict(r, now) for r in tls_on().revoke(body.target)]}
