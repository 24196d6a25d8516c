"""Single-use, short-lived worker credentials (OTPs), stored hashed and bound to a worker id."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

from hodei.errors import AuthError


@dataclass(slots=True)
class _Grant:
    worker_id: str
    expires_at: float
    labels: dict[str, str] = field(default_factory=dict)


def _digest(otp: str) -> bytes:
    return hashlib.sha256(otp.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True, slots=True)
class Redeemed:
    worker_id: str
    labels: dict[str, str]


class OtpRegistry:
    """Only the SHA-256 of an OTP is kept; redeeming removes it, so a replay is refused."""

    def __init__(self) -> None:
        self._grants: dict[bytes, _Grant] = {}
        self._now = time.time

    def issue(self, worker_id: str, ttl_s: float, labels: dict[str, str] | None = None) -> str:
        self._purge()
        otp = "hwp_" + secrets.token_urlsafe(32)
        self._grants[_digest(otp)] = _Grant(worker_id, self._now() + ttl_s, dict(labels or {}))
        return otp

    def redeem(self, otp: str) -> Redeemed:
        digest = _digest(otp)
        # The dict lookup is on a hash of the secret, so its timing reveals nothing useful;
        # compare_digest keeps the final check constant-time anyway.
        grant = self._grants.pop(digest, None)
        if grant is None or not hmac.compare_digest(digest, _digest(otp)):
            raise AuthError("invalid, expired or already used worker token")
        if grant.expires_at < self._now():
            raise AuthError("invalid, expired or already used worker token")
        return Redeemed(grant.worker_id, grant.labels)

    def revoke_worker(self, worker_id: str) -> None:
        for key in [k for k, g in self._grants.items() if g.worker_id == worker_id]:
            del self._grants[key]

    def _purge(self) -> None:
        now = self._now()
        for key in [k for k, g in self._grants.items() if g.expires_at < now]:
            del self._grants[key]


class ResumeTokens:
    """Session resume tokens: `worker.session.mac`, an HMAC under a key of this server's home.

    Stateless, so they stay valid across a server restart: an agent whose stream dropped, or
    whose server was restarted, proves it is the worker it was (the OTP was spent already)."""

    def __init__(self, key: bytes) -> None:
        self._key = hashlib.sha256(b"hodei-resume-token\0" + key).digest()

    def _mac(self, worker_id: str, session_id: str) -> str:
        msg = f"{worker_id}\0{session_id}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()

    def issue(self, worker_id: str, session_id: str) -> str:
        return f"{worker_id}.{session_id}.{self._mac(worker_id, session_id)}"

    def verify(self, token: str) -> tuple[str, str]:
        """(worker id, session id) of a genuine token; AuthError otherwise."""
        parts = token.split(".")
        if len(parts) != 3 or not all(parts):
            raise AuthError("invalid session resume token")
        worker_id, session_id, mac = parts
        if not hmac.compare_digest(mac, self._mac(worker_id, session_id)):
            raise AuthError("invalid session resume token")
        return worker_id, session_id
