"""How errors look over REST: `{"error": {"code": ..., "message": ...}}` and a status.

Bad input has one status, 400, and one code, `invalid_request`, whether the framework refused
the body's shape or the domain refused its content. A message never echoes a large input
back: parts of it are cut (MAX_SHOWN) and the whole message is bounded (MAX_MESSAGE).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hodei.errors import HodeiError, ValidationError

log = logging.getLogger(__name__)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status)


MAX_SHOWN = 64  # characters of one input value (a field name, a key) quoted in a message
MAX_MESSAGE = 2048
CODES = {"notfound": "not_found", "validation": "invalid_request"}


def bounded(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "..."


def describe(exc: HodeiError) -> tuple[int, dict[str, Any]]:
    """The status and body of a HodeiError, whether it ends the request or one batch item."""
    code = type(exc).__name__.removesuffix("Error").lower() or "error"
    return exc.status, error_body(CODES.get(code, code), bounded(exc.message))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HodeiError)
    async def hodei_error(_: Request, exc: HodeiError) -> JSONResponse:
        status, body = describe(exc)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors()[:5]:
            where = ".".join(str(x)[:MAX_SHOWN] for x in e.get("loc", ()) if x != "body")
            what = str(e.get("msg"))[: MAX_SHOWN * 4]
            parts.append(f"{where}: {what}" if where else what)
        message = bounded("; ".join(parts) or "invalid request")
        return error(ValidationError.status, "invalid_request", message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error(500, "internal", "internal error (see the server log)")
