"""The server's certificate authority for agents: enrollment, renewal, revocation, and the live
streams each certificate holds open.

An agent enrolls once with its single-use OTP and a CSR (over HTTPS, see server.api.http.pki)
and gets a short-lived client certificate naming its worker id; before it expires the agent
renews it over mTLS with the certificate it holds. A stream lives only while its worker holds a
valid, unrevoked certificate: revoking any of a worker's certificates cuts its streams at once,
and a stream whose worker let every certificate expire is cut at that moment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from hodei.errors import AuthError, ValidationError
from hodei.security import MAX_CSR, pki
from hodei.security.pki_files import CertRecord, CertRegistry, PkiPaths, load_ca
from hodei.server.security.otp import OtpRegistry, Redeemed

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Issued:
    info: pki.CertInfo
    cert_pem: bytes


@dataclass(eq=False, slots=True)
class LiveStream:
    """One Connect stream authenticated by a certificate."""

    worker_id: str
    serial: str
    task: asyncio.Task[Any]
    reason: str = ""  # why it was cut; empty while it may run
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class WorkerEviction(Protocol):
    """Who settles a worker that can never come back (the server's recovery)."""

    def process_exited(self, worker_id: str, why: str) -> None: ...


class AgentAuthority:
    def __init__(
        self,
        paths: PkiPaths,
        otps: OtpRegistry,
        lifetime_s: float,
        workers: WorkerEviction,
    ) -> None:
        self._ca_key, self._ca_cert = load_ca(paths)
        self.ca_pem = pki.cert_to_pem(self._ca_cert)
        self.registry = CertRegistry(paths.registry).load()
        self.otps = otps
        self.lifetime_s = lifetime_s
        self.workers = workers
        self._streams: dict[str, set[LiveStream]] = {}
        self._now = time.time

    # ---- issuing -----------------------------------------------------------------------------
    def enroll(self, otp: str, csr_pem: bytes, source: str = "") -> Issued:
        """Spend the OTP (once) and certify the CSR's key as the worker the OTP was made for."""
        self._check_csr_size(csr_pem)
        grant = self.otps.redeem(otp, source)
        issued = self._issue(grant.worker_id, csr_pem, grant.labels)
        log.info("worker %s enrolled (certificate %s)", grant.worker_id, issued.info.serial)
        return issued

    def renew(self, peer: pki.CertInfo, csr_pem: bytes) -> Issued:
        """A new certificate for the worker `peer` proves to be, on a new key."""
        self._check_csr_size(csr_pem)
        record = self.registry.get(peer.serial)
        issued = self._issue(peer.worker_id, csr_pem, record.labels if record else {})
        log.info("worker %s renewed its certificate (%s)", peer.worker_id, issued.info.serial)
        return issued

    @staticmethod
    def _check_csr_size(csr_pem: bytes) -> None:
        if len(csr_pem) > MAX_CSR:
            raise ValidationError(f"certificate request larger than {MAX_CSR} bytes")

    def _issue(self, worker_id: str, csr_pem: bytes, labels: dict[str, str]) -> Issued:
        cert = pki.sign_agent_csr(
            self._ca_key, self._ca_cert, csr_pem, worker_id, self._now(), self.lifetime_s
        )
        info = pki.cert_info(cert)
        self.registry.add(info, labels)
        return Issued(info, pki.cert_to_pem(cert))

    def grant(self, worker_id: str) -> Redeemed:
        """What the enrollment OTP granted the worker (its labels), for its registration."""
        records = self.registry.of_worker(worker_id)
        return Redeemed(worker_id, dict(records[-1].labels) if records else {})

    # ---- authenticating ----------------------------------------------------------------------
    def authenticate(self, auth_context: Mapping[str, Iterable[bytes]]) -> pki.CertInfo:
        """The identity in the peer's certificate (TLS verified its chain and dates already);
        AuthError if there is none or it was revoked."""
        pems = list(auth_context.get("x509_pem_cert", ()))
        if not pems:
            raise AuthError("a client certificate issued by this server's CA is required")
        info = pki.cert_info(pki.cert_from_pem(pems[0]))
        if self.registry.is_revoked(info.serial):
            raise AuthError(f"certificate {info.serial} of worker {info.worker_id} was revoked")
        # A connection outlives the handshake: its certificate may have expired since.
        if info.not_after <= self._now():
            raise AuthError(f"certificate {info.serial} of worker {info.worker_id} expired")
        return info

    # ---- live streams ------------------------------------------------------------------------
    def attach(self, peer: pki.CertInfo, task: asyncio.Task[Any]) -> LiveStream:
        stream = LiveStream(peer.worker_id, peer.serial, task)
        self._streams.setdefault(peer.worker_id, set()).add(stream)
        self._arm(stream, peer.not_after)
        return stream

    def detach(self, stream: LiveStream) -> None:
        if stream.timer is not None:
            stream.timer.cancel()
        held = self._streams.get(stream.worker_id)
        if held is not None:
            held.discard(stream)
            if not held:
                del self._streams[stream.worker_id]

    def _arm(self, stream: LiveStream, until: float) -> None:
        loop = asyncio.get_running_loop()
        stream.timer = loop.call_later(max(0.0, until - self._now()), self._deadline, stream)

    def _deadline(self, stream: LiveStream) -> None:
        # A renewal extends the worker's right to its stream; only a lapse of all of them ends it.
        until = self.registry.valid_until(stream.worker_id)
        if until > self._now():
            self._arm(stream, until)
            return
        self._cut(stream.worker_id, "its certificate expired")

    def streams(self, worker_id: str) -> int:
        return len(self._streams.get(worker_id, ()))

    # ---- revoking ----------------------------------------------------------------------------
    def revoke(self, target: str) -> list[CertRecord]:
        """Revoke a worker's certificates (or one by serial) and cut its streams at once."""
        records = self.registry.revoke(target)
        for worker_id in dict.fromkeys(r.worker_id for r in records):
            log.warning("certificate(s) of worker %s revoked", worker_id)
            self._cut(worker_id, "its certificate was revoked")
        return records

    def _cut(self, worker_id: str, reason: str) -> None:
        if self.registry.valid_until(worker_id) <= self._now():
            # No certificate it could come back with: settle its jobs now, not after the grace.
            self.workers.process_exited(worker_id, reason)
        for stream in list(self._streams.get(worker_id, ())):
            log.warning("cutting off worker %s: %s", worker_id, reason)
            stream.reason = reason
            stream.task.cancel()
