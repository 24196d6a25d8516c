"""Single-use, short-lived worker credentials (OTPs), stored hashed and bound to a worker id."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import unquote

from hodei.errors import AuthError


@dataclass(slots=True)
class _Grant:
    worker_id: str
    expires_at: float
    labels: dict[str, str] = field(default_factory=dict)
    image: str | None = None  # the job image the worker is started in (None: the worker image)


def _digest(otp: str) -> bytes:
    return hashlib.sha256(otp.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True, slots=True)
class Redeemed:
    worker_id: str
    labels: dict[str, str]
    image: str | None = None


# Failed redemptions allowed per source (client host) in a sliding window; past that every
# attempt from it is refused until the window has room again. OTPs are 256-bit, so this is not
# what keeps them safe: it keeps a flood of guesses out of the CPU, the logs and the audit.
MAX_FAILURES = 30
FAILURE_WINDOW_S = 60.0
_MAX_SOURCES = 10_000


def source_host(peer: str) -> str:
    """'ipv4:127.0.0.1:5000' / 'ipv6:[::1]:5000' (gRPC) or '127.0.0.1' (HTTP) -> the host."""
    kind, _, rest = peer.partition(":")
    rest = unquote(rest)  # some gRPC versions write ipv6:%5B::1%5D:port
    if kind not in ("ipv4", "ipv6", "unix"):
        return peer
    if kind == "unix":
        return "unix"
    host = rest.rpartition(":")[0] if rest.count(":") == 1 or rest.startswith("[") else rest
    return host.strip("[]") or peer


class OtpRegistry:
    """Only the SHA-256 of an OTP is kept; redeeming removes it, so a replay is refused.

    Redeeming is synchronous (no await between looking a grant up and removing it), so of two
    concurrent registrations with one OTP exactly one gets through."""

    def __init__(self) -> None:
        self._grants: dict[bytes, _Grant] = {}
        self._failures: dict[str, deque[float]] = {}
        self._now = time.time

    def issue(
        self,
        worker_id: str,
        ttl_s: float,
        labels: dict[str, str] | None = None,
        *,
        image: str | None = None,
    ) -> str:
        self._purge()
        otp = "hwp_" + secrets.token_urlsafe(32)
        expires = self._now() + ttl_s
        self._grants[_digest(otp)] = _Grant(worker_id, expires, dict(labels or {}), image)
        return otp

    def redeem(self, otp: str, source: str = "") -> Redeemed:
        """The grant of a valid OTP, spent. AuthError for anything else, and for every attempt
        from a `source` with too many recent failures."""
        if source and self._blocked(source):
            raise AuthError(
                f"too many failed worker registrations from {source}; try again in a minute"
            )
        try:
            return self._redeem(otp)
        except AuthError:
            if source:
                self._failed(source)
            raise

    def _blocked(self, source: str) -> bool:
        times = self._failures.get(source)
        if not times:
            return False
        horizon = self._now() - FAILURE_WINDOW_S
        while times and times[0] < horizon:
            times.popleft()
        return len(times) >= MAX_FAILURES

    def _failed(self, source: str) -> None:
        if source not in self._failures and len(self._failures) >= _MAX_SOURCES:
            self._failures.clear()  # bounded memory under a scan from many hosts
        self._failures.setdefault(source, deque(maxlen=MAX_FAILURES)).append(self._now())

    def _redeem(self, otp: str) -> Redeemed:
        digest = _digest(otp)
        # The dict lookup is on a hash of the secret, so its timing reveals nothing useful;
        # compare_digest keeps the final check constant-time anyway.
        grant = self._grants.pop(digest, None)
        if grant is None or not hmac.compare_digest(digest, _digest(otp)):
            raise AuthError("invalid, expired or already used worker token")
        if grant.expires_at < self._now():
            raise AuthError("invalid, expired or already used worker token")
        return Redeemed(grant.worker_id, grant.labels, grant.image)

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
