"""API authentication: bearer tokens with roles, checked for every HTTP request and gRPC call.

A token is `hodei_<id>_<secret>`; the server keeps its records (hash only) in the store and a
few seconds' cache of them, dropped at once when a server sharing the store revokes one (the
others hear it through the cluster link; the cache's expiry only covers a missed message). In
dev mode (loopback only, see config) every request acts as an admin. On first start the server
writes an admin token to HODEI_HOME/admin.token (mode 0600), which the CLI on this machine
uses by default.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
from starlette.datastructures import Headers

from hodei.domain.access import DEV_PRINCIPAL, Principal, Role, TokenRecord, permits, required_role
from hodei.errors import AuthError, ForbiddenError, HodeiError
from hodei.ports import AuditStore, TokenStore
from hodei.security.tokens import new_token, secret_matches, split_token
from hodei.server.security.audit import Auditor
from hodei.server.security.sessions import COOKIE, CSRF_HEADER, csrf_matches

CACHE_S = 5.0  # how long a check is trusted without reading the store again
ADMIN_TOKEN_FILE = "admin.token"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class AuthStore(TokenStore, AuditStore, Protocol):
    """What `ApiAuth.store` offers: the token records ApiAuth reads and writes, and the audit
    trail, which the HTTP access routes list through it."""


@dataclass(frozen=True, slots=True)
class TokenRevoked:
    """A token was revoked through this server (servers sharing the store must hear of it)."""

    token_id: str


class Publisher(Protocol):
    """Where events go (the server's event bus)."""

    def publish(self, event: object) -> None: ...


class ApiAuth:
    def __init__(
        self,
        store: AuthStore,
        auditor: Auditor,
        events: Publisher | None = None,
        dev: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.auditor = auditor
        self.events = events  # told of every revocation made here (TokenRevoked)
        self.dev = dev
        self._clock = clock
        self._cache: dict[str, tuple[TokenRecord | None, float]] = {}

    async def principal(self, authorization: str | None) -> Principal:
        """Who presents this Authorization value; AuthError when no valid token."""
        if self.dev:
            return DEV_PRINCIPAL
        if not authorization:
            raise AuthError("an API token is required (Authorization: Bearer hodei_...)")
        scheme, _, token = authorization.partition(" ")
        parts = split_token(token) if scheme.lower() == "bearer" else None
        if parts is None:
            raise AuthError("malformed API token (expected Authorization: Bearer hodei_...)")
        token_id, secret = parts
        record = await self._record(token_id)
        if record is None or not secret_matches(secret, record.secret_hash):
            raise AuthError("invalid API token")
        if record.revoked_at is not None:
            raise AuthError(f"API token {token_id} was revoked")
        return Principal(record.id, record.name, record.role)

    async def _record(self, token_id: str) -> TokenRecord | None:
        now = time.monotonic()
        cached = self._cache.get(token_id)
        if cached is not None and now - cached[1] < CACHE_S:
            return cached[0]
        record = await self.store.get_token(token_id)
        if len(self._cache) > 10_000:  # bounded: unknown ids from a scan must not grow it
            self._cache.clear()
        self._cache[token_id] = (record, now)
        return record

    def forget(self, token_id: str) -> None:
        self._cache.pop(token_id, None)

    def forget_all(self) -> None:
        self._cache.clear()

    async def revoke(self, token_id: str, when: float) -> TokenRecord:
        """Revoke in the store; refused from now on here, and on the other servers as soon as
        they hear of it."""
        record = await self.store.revoke_token(token_id, when)
        self.forget(token_id)
        if self.events is not None:
            self.events.publish(TokenRevoked(token_id))
        return record

    async def create(self, role: Role, name: str) -> tuple[TokenRecord, str]:
        token_id, token, secret_hash = new_token()
        record = TokenRecord(token_id, name, role, secret_hash, self._clock())
        await self.store.create_token(record)
        return record, token

    async def check(self, authorization: str | None, needed: Role, what: str) -> Principal:
        """principal() and the role check; audits a refusal."""
        try:
            principal = await self.principal(authorization)
        except AuthError as exc:
            await self.auditor.denied("anonymous", "auth.denied", what, exc.message)
            raise
        if not permits(principal.role, needed):
            message = f"role {principal.role} may not do this (needs {needed})"
            await self.auditor.denied(principal.actor, "auth.forbidden", what, message)
            raise ForbiddenError(message)
        return principal

    def middleware(self, app: App) -> App:
        """ASGI middleware: every HTTP request needs the role `required_role` names."""

        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            method, path = scope["method"], scope["path"]
            needed = required_role(method, path)
            if needed is not None:
                headers = Headers(scope=scope)
                try:
                    header = _authorization(headers, method)
                    principal = await self.check(header, needed, f"{method} {path}")
                except AuthError as exc:
                    await _error(send, exc)
                    return
                scope.setdefault("state", {})["principal"] = principal
            await app(scope, receive, send)

        return guarded


def _authorization(headers: Headers, method: str) -> str | None:
    """The request's Authorization: its header, else the dashboard's session cookie. A change
    asked for with the cookie must carry the session's CSRF token (a page of another site can
    make the browser send the cookie, never the header)."""
    header = headers.get("authorization")
    if header is not None:
        return header
    token = session_token(headers.get("cookie"))
    if token is None:
        return None
    if method not in ("GET", "HEAD", "OPTIONS") and not csrf_matches(
        token, headers.get(CSRF_HEADER)
    ):
        raise ForbiddenError("this request needs the session's CSRF token (X-Hodei-CSRF)")
    return f"Bearer {token}"


def session_token(cookie_header: str | None) -> str | None:
    """The API token in a Cookie header's session cookie, if any."""
    if not cookie_header:
        return None
    for part in cookie_header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return value
    return None


async def _error(send: Send, exc: HodeiError) -> None:
    code = "unauthorized" if exc.status == 401 else "forbidden"
    body = orjson.dumps({"error": {"code": code, "message": exc.message}})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if exc.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="hodei"'))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def ensure_admin_token(auth: ApiAuth, home: Path) -> Path:
    """The home's admin token file, made (or made again, if its token is gone or revoked)."""
    path = home / ADMIN_TOKEN_FILE
    try:
        await auth.principal(f"Bearer {path.read_text().strip()}")
        return path
    except (OSError, AuthError):
        pass
    _, token = await auth.create(Role.ADMIN, "local admin (HODEI_HOME/admin.token)")
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    os.replace(tmp, path)
    return path
