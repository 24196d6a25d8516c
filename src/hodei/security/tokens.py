"""API token strings: `hodei_<id>_<secret>`. The id finds the record, the secret proves it.

Only a SHA-256 of the secret is stored: the secret is 32 random bytes, so a fast hash is as
safe as a slow one, and checking costs microseconds per request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

PREFIX = "hodei_"
_TOKEN_RE = re.compile(r"hodei_([a-z0-9]{12})_([A-Za-z0-9_-]{43})")


def new_token() -> tuple[str, str, str]:
    """(token id, full token to hand out once, hash of its secret to store)."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return token_id, f"{PREFIX}{token_id}_{secret}", hash_secret(secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, else None."""
    m = _TOKEN_RE.fullmatch(token.strip())
    return (m.group(1), m.group(2)) if m else None


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
