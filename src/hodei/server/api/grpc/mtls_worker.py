"""The agents' gRPC service under mTLS (`hodei server --tls`): identities from client
certificates.

gRPC checks the chain and the dates in the handshake; this service reads the worker id from the
certificate, refuses a revoked one, and lets a connection act only as the worker its
certificate names (see server.security.agent_pki). Enrollment cannot happen here: see
server.security.mtls.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc

from hodei._proto.hodei.v1 import worker_pb2 as pb
from hodei.errors import AuthError, ValidationError
from hodei.security import pki
from hodei.server.api.grpc.worker_service import WorkerService
from hodei.server.security.agent_pki import AgentAuthority
from hodei.server.security.otp import Redeemed, source_host

log = logging.getLogger(__name__)


class MtlsWorkerService(WorkerService):
    """WorkerService whose identities come from client certificates."""

    def __init__(self, *args: Any, authority: AgentAuthority, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.authority = authority

    def _peer(self, context: grpc.aio.ServicerContext) -> pki.CertInfo:
        return self.authority.authenticate(context.auth_context())

    async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        try:
            peer = self._peer(context)
        except AuthError as exc:
            await self._refuse(context, exc.message)
        task = asyncio.current_task()
        assert task is not None  # a gRPC handler always runs in a task
        stream = self.authority.attach(peer, task)
        try:
            await super().Connect(request_iterator, context)
        except asyncio.CancelledError:
            if not stream.reason:
                raise  # the server is stopping
            # Cut off by the authority (revoked, expired): tell the agent why.
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, stream.reason)
        finally:
            self.authority.detach(stream)

    def _grant(self, reg: pb.Register, context: grpc.aio.ServicerContext) -> Redeemed:
        peer = self._peer(context)
        if not reg.otp:  # spent at enrollment: the certificate is the credential now
            return self.authority.grant(peer.worker_id)
        grant = self.otps.redeem(reg.otp, source_host(context.peer()))
        if grant.worker_id != peer.worker_id:
            raise AuthError("the token was issued for another worker than this certificate")
        return grant

    def _check_peer(self, worker_id: str, context: grpc.aio.ServicerContext) -> None:
        if self._peer(context).worker_id != worker_id:
            raise AuthError("the session belongs to another worker than this certificate")

    async def RenewCertificate(
        self, request: pb.RenewCertificateRequest, context: grpc.aio.ServicerContext
    ) -> pb.RenewCertificateResponse:
        try:
            issued = self.authority.renew(self._peer(context), request.csr_pem)
        except AuthError as exc:
            await self._refuse(context, exc.message)
        except ValidationError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
        return pb.RenewCertificateResponse(
            certificate_pem=issued.cert_pem,
            not_after_ms=int(issued.info.not_after * 1000),
            serial=issued.info.serial,
        )
