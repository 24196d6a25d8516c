"""Who may do what: API roles, the permission each request needs, and audit entries.

Pure rules, no I/O: the server's middleware asks `required_role` for every request and
`permits` whether the caller's role covers it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from hodei.errors import ValidationError


class Role(StrEnum):
    VIEWER = "viewer"  # read jobs, logs, workers
    SUBMITTER = "submitter"  # and submit, cancel, retry jobs
    ADMIN = "admin"  # and secrets, worker OTPs, tokens, PKI, the audit log

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Role.VIEWER: 0, Role.SUBMITTER: 1, Role.ADMIN: 2}

# Requests that need no token: health, agents enrolling with their own OTP, the dashboard's
# files and its sign-in (which checks what it is given itself).
PUBLIC = frozenset(
    {
        ("GET", "/healthz"),
        ("POST", "/api/v1/agents/enroll"),
        ("GET", "/"),
        ("GET", "/login"),
        ("GET", "/favicon.ico"),
        ("GET", "/api/v1/session"),
        ("POST", "/api/v1/session"),
        ("DELETE", "/api/v1/session"),
    }
)
_STATIC = "/static/"
_JOB_ACTION = re.compile(
    r"^/api/v1/(jobs(/batch|/[^/]+/(cancel|retry))?"
    r"|pipelines(/validate|/[^/]+/(cancel|retry|approve))?"
    r"|templates/[^/]+/run)$"
)
_ADMIN_READS = ("/api/v1/secrets", "/api/v1/tokens", "/api/v1/audit", "/api/v1/pki")
_DOCS = ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect")


def parse_role(text: str) -> Role:
    try:
        return Role(text.strip().lower())
    except ValueError:
        raise ValidationError(
            f"unknown role {text[:40]!r} (use {', '.join(r.value for r in Role)})"
        ) from None


def required_role(method: str, path: str) -> Role | None:
    """The least role a request needs; None when it needs no token."""
    method = method.upper()
    if (method, path) in PUBLIC or (method in ("GET", "HEAD") and path in _DOCS):
        return None
    if method in ("GET", "HEAD") and (
        path == "/" or (path.startswith(_STATIC) and ".." not in path)
    ):
        return None
    if method in ("GET", "HEAD"):
        if path.startswith(_ADMIN_READS):
            return Role.ADMIN  # secret names, tokens, audit trail, certificates
        return Role.VIEWER
    if method == "POST" and _JOB_ACTION.match(path):
        return Role.SUBMITTER
    return Role.ADMIN  # every other change: secrets, OTPs, tokens, revocations


def permits(role: Role, needed: Role) -> bool:
    return role.rank >= needed.rank


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request comes from: a token (its id and name) or the dev-mode stand-in."""

    token_id: str
    name: str
    role: Role

    @property
    def actor(self) -> str:
        return f"token:{self.token_id}" + (f" ({self.name})" if self.name else "")

    def queued_by(self, claimed: str) -> str:
        """Who a job is recorded as queued by: the token, whatever the request claims; in dev
        mode (no tokens) what it claims."""
        return claimed if self is DEV_PRINCIPAL else self.actor


DEV_PRINCIPAL = Principal("dev", "dev mode", Role.ADMIN)


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A stored API token: never its secret, only the secret's hash."""

    id: str
    name: str
    role: Role
    secret_hash: str
    created_at: float
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit trail. `seq` is set by the store."""

    at: float
    actor: str  # token:<id> (name), worker:<id>, dev, server
    action: str  # e.g. job.submit, secret.set, worker.register, auth.denied
    target: str = ""  # the job, secret, token or worker acted on
    detail: str = ""
    seq: int = 0
