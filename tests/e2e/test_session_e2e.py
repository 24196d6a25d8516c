"""Browser sessions against a real server: the one-time sign-in link, the HttpOnly cookie, the
CSRF token every change made with the cookie needs, and the security headers."""

from __future__ import annotations

import contextlib
import re

import httpx
import pytest
from harness import RunningServer
from test_access_e2e import make_token

pytestmark = pytest.mark.e2e

LINK = re.compile(r"dashboard: (http://\S+/login\?code=\S+)")


def anonymous(server: RunningServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, follow_redirects=False)


def sign_in(server: RunningServer, token: str) -> tuple[httpx.Client, str]:
    client = anonymous(server)
    answer = client.post("/api/v1/session", json={"token": token})
    assert answer.status_code == 200, answer.text
    return client, answer.json()["csrf"]


def test_the_ready_lines_link_signs_a_browser_in_once(server: RunningServer) -> None:
    found = [m.group(1) for line in server.stderr if (m := LINK.search(line))]
    assert len(found) == 1, server.stderr
    path = found[0].removeprefix(server.url)
    with anonymous(server) as client:
        assert client.get("/api/v1/session").status_code == 401
        first = client.get(path)
        assert first.status_code == 303 and first.headers["location"] == "/"
        cookie = first.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        session = client.get("/api/v1/session").json()
        assert session["role"] == "admin" and len(session["csrf"]) == 32
        assert "hodei_" not in str(session)  # the token never reaches page scripts
    with anonymous(server) as other:
        again = other.get(path)  # used: worth nothing now
        assert again.status_code == 303 and "expired" in again.headers["location"]
        assert "set-cookie" not in again.headers
        assert other.get("/api/v1/session").status_code == 401


def test_changes_with_the_cookie_need_the_csrf_token(server: RunningServer) -> None:
    client, csrf = sign_in(server, server.token)
    with contextlib.closing(client):
        assert client.get("/api/v1/jobs").status_code == 200  # reads need none
        forged = client.post("/api/v1/jobs", json={"command": "echo forged"})
        assert forged.status_code == 403 and "CSRF" in forged.json()["error"]["message"]
        wrong = client.post(
            "/api/v1/jobs", json={"command": "echo x"}, headers={"X-Hodei-CSRF": "0" * 32}
        )
        assert wrong.status_code == 403
        made = client.post(
            "/api/v1/jobs", json={"command": "echo ok"}, headers={"X-Hodei-CSRF": csrf}
        )
        assert made.status_code == 201, made.text
        assert client.get("/api/v1/jobs").json()["items"][0]["command"] == "echo ok"
        assert client.delete("/api/v1/session").status_code == 204
        client.cookies.clear()  # as the browser does with the Max-Age=0 answer
        assert client.get("/api/v1/jobs").status_code == 401
    # A bearer token is not a cookie: no CSRF token needed.
    with server.http() as bearer:
        assert bearer.post("/api/v1/jobs", json={"command": "true"}).status_code == 201


def test_a_viewer_session_may_look_but_not_act(server: RunningServer) -> None:
    client, csrf = sign_in(server, make_token(server, "viewer"))
    with contextlib.closing(client):
        assert client.get("/api/v1/session").json()["role"] == "viewer"
        refused = client.post(
            "/api/v1/jobs", json={"command": "true"}, headers={"X-Hodei-CSRF": csrf}
        )
        assert refused.status_code == 403 and "role viewer" in refused.text
    with anonymous(server) as bad:
        assert bad.post("/api/v1/session", json={"token": "hodei_nope_nope"}).status_code == 401
        assert bad.post("/api/v1/session", json={"token": "not a token"}).status_code == 401
        assert "set-cookie" not in bad.post("/api/v1/session", json={"token": "x"}).headers


def test_every_answer_carries_the_security_headers(server: RunningServer) -> None:
    with anonymous(server) as client:
        for answer in (
            client.get("/"),
            client.get("/api/v1/jobs"),  # a 401 from the auth layer
            client.get("/healthz"),
        ):
            csp = answer.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert "unsafe-inline" not in csp
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["x-frame-options"] == "DENY"
        assert client.get("/static/../api/v1/secrets").status_code in (401, 404)


def test_the_cli_makes_a_new_sign_in_link(server: RunningServer) -> None:
    out = server.hodei("dashboard")
    assert out.returncode == 0, out.stderr.decode()
    link = out.stdout.decode().strip()
    assert link.startswith(f"{server.url}/login?code=")
    with anonymous(server) as client:
        assert client.get(link.removeprefix(server.url)).status_code == 303
        assert client.get("/api/v1/session").json()["role"] == "admin"
