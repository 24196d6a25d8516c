"""Browser sessions: the dashboard signs in with an API token kept in an HttpOnly cookie, and
every change it asks for carries a CSRF token derived from that cookie.

The cookie holds the API token itself, so a session is checked (and revoked) exactly as a
token is, on whichever server sharing the store gets the request. Page scripts never see it
(HttpOnly), other sites never send it (SameSite=Strict), and a state-changing request with
it must also carry `X-Hodei-CSRF`, which only a page that read `GET /api/v1/session` knows.

A one-time sign-in link (`/login?code=...`, as the server's ready line prints one) trades a
random single-use code for that cookie; the code names no token and is worthless once used.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

COOKIE = "hodei_session"
CSRF_HEADER = "x-hodei-csrf"
COOKIE_MAX_AGE_S = 12 * 3600
LINK_TTL_S = 24 * 3600
MAX_LINKS = 1000


def csrf_of(token: str) -> str:
    """The CSRF token of a session: only someone who has (or was shown) the session's value
    can know it."""
    return hashlib.sha256(b"hodei-csrf\x00" + token.encode()).hexdigest()[:32]


def csrf_matches(token: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(csrf_of(token), presented)


def session_cookie(token: str, secure: bool) -> str:
    """The Set-Cookie value that signs a browser in with `token`."""
    flags = f"Path=/; Max-Age={COOKIE_MAX_AGE_S}; HttpOnly; SameSite=Strict"
    return f"{COOKIE}={token}; {flags}" + ("; Secure" if secure else "")


def cleared_cookie(secure: bool) -> str:
    flags = "Path=/; Max-Age=0; HttpOnly; SameSite=Strict"
    return f"{COOKIE}=; {flags}" + ("; Secure" if secure else "")


class SignInLinks:
    """Single-use codes, each standing for one API token for a while (in this server's memory
    only: a link is redeemed on the server that printed or made it)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._codes: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def mint(self, token: str, ttl_s: float = LINK_TTL_S) -> str:
        code = secrets.token_urlsafe(24)
        self._codes[code] = (token, self._clock() + ttl_s)
        while len(self._codes) > MAX_LINKS:
            self._codes.popitem(last=False)
        return code

    def redeem(self, code: str) -> str | None:
        """The token the code stands for, once; None for an unknown, used or expired code."""
        found = self._codes.pop(code, None)
        if found is None or found[1] < self._clock():
            return None
        return found[0]
