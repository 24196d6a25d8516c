"""The dashboard's files (static, shipped in the package), and the headers every answer
carries so that a page of ours can only run our own scripts and cannot be framed."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).resolve().parent / "static"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)

router = APIRouter()


@router.get("/", include_in_schema=False, response_model=None)
async def index() -> Response:
    page = STATIC / "index.html"
    if not page.is_file():
        return Response("the dashboard's files are not installed\n", status_code=404)
    # Always asked again: a new version of the files must not meet an old index.
    return FileResponse(page, headers={"Cache-Control": "no-cache"})


def mount_static(app: FastAPI) -> None:
    # check_dir=False: a tree without the built files still serves the API.
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")


class SecurityHeaders:
    """ASGI middleware: the headers above on every HTTP answer (the API's JSON too: a browser
    that is tricked into rendering one must still run nothing)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(item for item in HEADERS if item[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)
