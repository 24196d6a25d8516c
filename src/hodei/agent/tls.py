"""The agent's side of mTLS: enroll once, hold a short-lived client certificate, renew it.

The private key is made here and stays in this process's memory: it is never written to disk
and never sent. Enrollment posts the single-use OTP and a CSR to the server over HTTPS (the
server is authenticated by the CA the agent was given); renewal sends a CSR for a new key over
gRPC on a fresh mTLS connection made with the current certificate. Each new certificate bumps
`generation`, which tells the session that new connections must use it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization

from hodei._proto.hodei.v1 import worker_pb2, worker_pb2_grpc
from hodei.errors import AuthError, HodeiError
from hodei.security import pki

ENROLL_PATH = "/api/v1/agents/enroll"
ENROLL_TIMEOUT_S = (30.0, 5.0)  # overall, connect
RENEW_TIMEOUT_S = 30.0
RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0


def _public_der(public: Any) -> bytes:
    return bytes(
        public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


class AgentTls:
    def __init__(self, ca_pem: bytes, enroll_url: str) -> None:
        self.ca_pem = ca_pem
        self.enroll_url = enroll_url.rstrip("/")
        self.worker_id = ""
        self.serial = ""
        self.not_before = 0.0
        self.not_after = 0.0
        self.generation = 0  # 0: no certificate yet
        self._key_pem = b""
        self._cert_pem = b""

    @classmethod
    def from_file(cls, ca_path: str, enroll_url: str) -> AgentTls:
        try:
            ca_pem = Path(ca_path).expanduser().read_bytes()
        except OSError as exc:
            raise HodeiError(f"cannot read the CA certificate {ca_path}: {exc.strerror}") from None
        return cls.from_pem(ca_pem, enroll_url)

    @classmethod
    def from_pem(cls, ca_pem: bytes, enroll_url: str) -> AgentTls:
        """From the CA certificate itself (HODEI_CA_PEM: a container has no host path)."""
        try:
            pki.cert_from_pem(ca_pem)  # a clear error now rather than a failed handshake later
        except ValueError as exc:
            raise HodeiError(f"the CA certificate is not valid PEM: {exc}") from None
        if not enroll_url.startswith("https://"):
            raise HodeiError(f"the enrollment URL must be https:// (got {enroll_url!r})")
        return cls(ca_pem, enroll_url)

    # ---- certificates ------------------------------------------------------------------------
    def _install(self, key: pki.PrivateKey, cert_pem: bytes) -> None:
        cert = pki.cert_from_pem(cert_pem)
        if _public_der(cert.public_key()) != _public_der(key.public_key()):
            raise HodeiError("the server sent a certificate for another key")
        info = pki.cert_info(cert)
        if self.worker_id and info.worker_id != self.worker_id:
            raise HodeiError(f"the server sent a certificate for worker {info.worker_id!r}")
        self.worker_id, self.serial = info.worker_id, info.serial
        self.not_before, self.not_after = info.not_before, info.not_after
        self._key_pem, self._cert_pem = pki.key_to_pem(key), cert_pem
        self.generation += 1

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca_pem, self._key_pem, self._cert_pem)

    def renew_at(self) -> float:
        return pki.renew_at(self.not_before, self.not_after)

    def expired(self) -> bool:
        return time.time() >= self.not_after

    # ---- talking to the server ---------------------------------------------------------------
    async def enroll(self, otp: str) -> None:
        """Spend the OTP for a first certificate; AuthError when the server refuses the OTP."""
        key = pki.new_key()
        body = {"otp": otp, "csr": pki.make_csr(key).decode()}
        import httpx  # only agents that enroll need it (70 ms of start-up for the others)

        context = ssl.create_default_context(cadata=self.ca_pem.decode())
        timeout = httpx.Timeout(ENROLL_TIMEOUT_S[0], connect=ENROLL_TIMEOUT_S[1])
        try:
            async with httpx.AsyncClient(verify=context, timeout=timeout) as http:
                response = await http.post(self.enroll_url + ENROLL_PATH, json=body)
        except httpx.HTTPError as exc:
            raise HodeiError(
                f"cannot reach {self.enroll_url}: {type(exc).__name__}: {exc}"
            ) from None
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if response.status_code >= 400:
            error = answer.get("error") if isinstance(answer, dict) else None
            why = error.get("message") if isinstance(error, dict) else None
            message = str(why or f"HTTP {response.status_code}")
            if response.status_code in (401, 403):
                raise AuthError(message)
            raise HodeiError(f"enrollment refused: {message}")
        cert = answer.get("certificate") if isinstance(answer, dict) else None
        if not isinstance(cert, str):
            raise HodeiError("the enrollment answer has no certificate")
        self._install(key, cert.encode())

    async def renew(self, target: str, options: list[tuple[str, Any]]) -> None:
        """Get a certificate for a new key, authenticated by the current one."""
        key = pki.new_key()
        request = worker_pb2.RenewCertificateRequest(csr_pem=pki.make_csr(key))
        # A connection of its own, so renewal never waits on (or disturbs) the job stream.
        async with grpc.aio.secure_channel(target, self.credentials(), options=options) as ch:
            stub = worker_pb2_grpc.WorkerServiceStub(ch)  # type: ignore[no-untyped-call]
            answer = await stub.RenewCertificate(request, timeout=RENEW_TIMEOUT_S)
        self._install(key, answer.certificate_pem)


async def keep_renewed(tls: AgentTls, target: str, options: list[tuple[str, Any]]) -> None:
    """Renew the certificate 2/3 into its life, forever; retry failures with backoff while it
    is still valid. A refusal (revoked) ends the loop: the server cuts the agent off anyway."""
    log = logging.getLogger("hodei.agent")
    backoff = RETRY_MIN_S
    while True:
        await asyncio.sleep(max(0.0, tls.renew_at() - time.time()))
        try:
            await tls.renew(target, options)
        except (grpc.aio.AioRpcError, HodeiError) as exc:
            if isinstance(exc, grpc.aio.AioRpcError):
                if exc.code() in (
                    grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.PERMISSION_DENIED,
                ):
                    log.error(
                        "the server refused to renew this agent's certificate: %s", exc.details()
                    )
                    return
                why = f"{exc.code().name} {exc.details() or ''}"
            else:
                why = exc.message
            if tls.expired():
                log.error("certificate expired before it could be renewed (%s)", why)
                return
            log.warning("certificate renewal failed (%s); retrying", why)
            # Retry well before expiry even with short lifetimes (tests use seconds).
            await asyncio.sleep(min(backoff, max(0.05, (tls.not_after - time.time()) / 4)))
            backoff = min(backoff * 2, RETRY_MAX_S)
            continue
        backoff = RETRY_MIN_S
        log.info(
            "renewed certificate: %s, valid for %.0fs", tls.serial, tls.not_after - time.time()
        )
