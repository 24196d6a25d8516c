"""mTLS for the agents' gRPC port (`hodei server --tls`).

The port requires a client certificate issued by the server's CA (gRPC checks the chain and the
dates in the handshake); this service then reads the worker id from the certificate, refuses a
revoked one, and lets a connection act only as the worker its certificate names. Enrollment
cannot happen here: grpc's server credentials can only require client certificates or not ask
for them, never make them optional, so agents without one enroll over HTTPS (server.pki_api).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any

import grpc

from hodei._proto.hodei.v1 import worker_pb2 as pb
from hodei.config import ServerSettings, split_addr
from hodei.errors import AuthError, HodeiError, ValidationError
from hodei.security import pki
from hodei.security.pki_files import PkiPaths, init_pki, server_cert_names
from hodei.server.agent_pki import AgentAuthority
from hodei.server.grpc_worker import WorkerService
from hodei.server.otp import Redeemed, source_host

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


def _listen_names(settings: ServerSettings) -> list[str]:
    """Hosts the server listens on that a client may dial by name (not the wildcards)."""
    names = []
    for addr, port in ((settings.grpc_addr, 50051), (settings.http_addr, 8080)):
        host = split_addr(addr, port)[0]
        try:
            if ipaddress.ip_address(host).is_unspecified:
                continue
        except ValueError:
            pass
        names.append(host)
    return names


def prepare_pki(settings: ServerSettings) -> PkiPaths:
    """The home's PKI, created on first use (the embedded default needs no separate step)."""
    paths = PkiPaths.of_home(settings.home)
    if not paths.exists():
        init_pki(paths, [*pki.DEFAULT_SANS, *_listen_names(settings)])
        log.info("created a CA and a server certificate in %s", paths.root)
        return paths
    try:
        covered = server_cert_names(paths)
    except (OSError, HodeiError) as exc:
        raise HodeiError(f"cannot read the server certificate in {paths.root}: {exc}") from None
    missing = [h for h in _listen_names(settings) if h.lower() not in covered]
    if missing:
        log.warning(
            "the server certificate does not name %s; clients dialling that will fail "
            "(recreate it: hodei pki init --force --san ...)",
            ", ".join(missing),
        )
    return paths


def grpc_credentials(paths: PkiPaths) -> grpc.ServerCredentials:
    try:
        key, cert, ca = (
            p.read_bytes() for p in (paths.server_key, paths.server_cert, paths.ca_cert)
        )
    except OSError as exc:
        raise HodeiError(f"cannot read the server's TLS files in {paths.root}: {exc}") from None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )
