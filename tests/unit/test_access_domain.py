"""Roles, the role each request needs, and API token strings."""

from __future__ import annotations

import pytest

from hodei.domain.access import Role, parse_role, permits, required_role
from hodei.errors import ValidationError
from hodei.security.tokens import hash_secret, new_token, secret_matches, split_token


@pytest.mark.parametrize(
    ("method", "path", "needed"),
    [
        ("GET", "/healthz", None),
        ("POST", "/api/v1/agents/enroll", None),
        ("GET", "/openapi.json", None),
        ("GET", "/metrics", Role.VIEWER),
        ("GET", "/api/v1/jobs", Role.VIEWER),
        ("GET", "/api/v1/jobs/j1/logs/stream", Role.VIEWER),
        ("GET", "/api/v1/workers", Role.VIEWER),
        ("POST", "/api/v1/jobs", Role.SUBMITTER),
        ("POST", "/api/v1/jobs/j1/cancel", Role.SUBMITTER),
        ("POST", "/api/v1/jobs/j1/retry", Role.SUBMITTER),
        ("POST", "/api/v1/jobs/batch", Role.SUBMITTER),
        ("POST", "/api/v1/jobs/j1/other", Role.ADMIN),
        ("GET", "/api/v1/secrets", Role.ADMIN),
        ("PUT", "/api/v1/secrets/X", Role.ADMIN),
        ("DELETE", "/api/v1/secrets/X", Role.ADMIN),
        ("POST", "/api/v1/workers/otp", Role.ADMIN),
        ("GET", "/api/v1/tokens", Role.ADMIN),
        ("GET", "/api/v1/audit", Role.ADMIN),
        ("GET", "/api/v1/pki/certs", Role.ADMIN),
        ("POST", "/api/v1/pki/revoke", Role.ADMIN),
        ("PATCH", "/api/v1/jobs", Role.ADMIN),
        ("POST", "/healthz", Role.ADMIN),
    ],
)
def test_required_role(method: str, path: str, needed: Role | None) -> None:
    assert required_role(method, path) is needed


def test_roles_are_ordered() -> None:
    assert permits(Role.ADMIN, Role.SUBMITTER) and permits(Role.SUBMITTER, Role.VIEWER)
    assert not permits(Role.VIEWER, Role.SUBMITTER) and not permits(Role.SUBMITTER, Role.ADMIN)
    assert parse_role(" Admin ") is Role.ADMIN
    with pytest.raises(ValidationError, match="unknown role 'root'"):
        parse_role("root")


def test_tokens_round_trip_and_only_their_hash_is_kept() -> None:
    token_id, token, stored = new_token()
    parts = split_token(token)
    assert parts is not None and parts[0] == token_id
    assert secret_matches(parts[1], stored) and stored == hash_secret(parts[1])
    assert parts[1] not in stored
    tampered = parts[1][:-1] + ("B" if parts[1].endswith("A") else "A")
    assert not secret_matches(tampered, stored)
    assert new_token()[1] != token


@pytest.mark.parametrize(
    "text",
    ["", "hodei_", "hodei_abc_def", "bearer hodei_x", "hodei_000000000000_" + "x" * 42, "é" * 60],
)
def test_malformed_tokens_are_not_split(text: str) -> None:
    assert split_token(text) is None
