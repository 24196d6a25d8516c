"""REST routes of browser sessions (the dashboard's sign-in): who is signed in, sign in with
an API token, sign out, one-time sign-in links."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from hodei.domain.access import Principal, Role
from hodei.errors import AuthError
from hodei.security.tokens import split_token
from hodei.server.api.http.deps import HttpServices, Services
from hodei.server.api.http.errors import error
from hodei.server.security.api_auth import session_token
from hodei.server.security.sessions import cleared_cookie, csrf_of, session_cookie

router = APIRouter()


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=200)


def _session(principal: Principal, token: str) -> dict[str, Any]:
    return {
        "name": principal.name,
        "role": principal.role.value,
        "actor": principal.actor,
        "csrf": csrf_of(token),
    }


async def _signed_in(services: HttpServices, token: str | None) -> Principal:
    if services.auth.dev:
        return await services.auth.principal(None)
    if not token:
        raise AuthError("not signed in")
    return await services.auth.principal(f"Bearer {token}")


@router.get("/api/v1/session")
async def whoami(request: Request, services: Services) -> Response:
    """The signed-in session (with its CSRF token), or 401."""
    token = session_token(request.headers.get("cookie")) or ""
    try:
        principal = await _signed_in(services, token)
    except AuthError as exc:
        return error(401, "unauthorized", exc.message)
    return JSONResponse(_session(principal, token))


@router.post("/api/v1/session")
async def sign_in(body: SignIn, services: Services) -> Response:
    """Check the token and keep it in an HttpOnly, SameSite=Strict cookie."""
    if split_token(body.token) is None:
        return error(401, "unauthorized", "malformed API token (expected hodei_...)")
    try:
        principal = await services.auth.check(f"Bearer {body.token}", Role.VIEWER, "sign-in")
    except AuthError as exc:
        return error(401, "unauthorized", exc.message)
    answer = JSONResponse(_session(principal, body.token))
    answer.headers["set-cookie"] = session_cookie(body.token, services.tls)
    await services.auditor.record(principal.actor, "session.sign_in", principal.actor)
    return answer


@router.delete("/api/v1/session", status_code=204)
async def sign_out(services: Services) -> Response:
    answer = Response(status_code=204)
    answer.headers["set-cookie"] = cleared_cookie(services.tls)
    return answer


@router.post("/api/v1/session/links", status_code=201)
async def new_link(request: Request, services: Services) -> dict[str, Any]:
    """A one-time sign-in link for the caller's own token (admin: the route's role)."""
    header = request.headers.get("authorization", "")
    token = header.partition(" ")[2] if header.lower().startswith("bearer ") else ""
    token = token or session_token(request.headers.get("cookie")) or ""
    code = services.links.mint(token)
    return {"path": f"/login?code={code}", "expires_in_s": 24 * 3600}


@router.get("/login", response_model=None)
async def login(services: Services, code: Annotated[str, Query(max_length=100)] = "") -> Response:
    """Redeem a one-time code: the browser gets the session cookie and goes to the dashboard."""
    token = services.links.redeem(code) if code else None
    if token is None and not services.auth.dev:
        return RedirectResponse("/#/signin?link=expired", status_code=303)
    answer = RedirectResponse("/", status_code=303)
    if token is not None:
        answer.headers["set-cookie"] = session_cookie(token, services.tls)
    return answer
