"""What the client-facing gRPC services share: our errors as status codes with a bounded
message, and the token and role check of a call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from hodei.domain.access import Principal, Role
from hodei.domain.pipelines import PipelineError
from hodei.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    HodeiError,
    NotFoundError,
    ValidationError,
)
from hodei.server.security.api_auth import ApiAuth

T = TypeVar("T")
Context = Any  # grpc.aio.ServicerContext: grpcio ships no type information
MAX_MESSAGE = 4000  # a status message travels in a trailer (8 KiB of metadata by default)

# Most specific first: a PipelineError is a ValidationError, a ForbiddenError an AuthError.
_STATUS: tuple[tuple[type[HodeiError], grpc.StatusCode], ...] = (
    (ValidationError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (ConflictError, grpc.StatusCode.FAILED_PRECONDITION),
    (ForbiddenError, grpc.StatusCode.PERMISSION_DENIED),
    (AuthError, grpc.StatusCode.UNAUTHENTICATED),
)


def status_of(exc: HodeiError) -> grpc.StatusCode:
    for kind, code in _STATUS:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.UNAVAILABLE


def issues_message(exc: PipelineError, limit: int = MAX_MESSAGE) -> str:
    """'FILE: N errors' and one 'FILE:LINE:COL: message' line per issue, cut to `limit`
    characters at a line's end (with how many were left out)."""
    lines = exc.message.split("\n")
    kept = [lines[0]]
    size = len(lines[0])
    for index, line in enumerate(lines[1:], start=1):
        rest = len(lines) - index
        if size + 1 + len(line) > limit - 40 and rest > 0:
            kept.append(f"... and {rest} more")
            break
        kept.append(line)
        size += 1 + len(line)
    return "\n".join(kept)


def message_of(exc: HodeiError) -> str:
    if isinstance(exc, PipelineError):
        return issues_message(exc)
    text = exc.message
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."


async def call(context: Context, work: Callable[[], Awaitable[T]]) -> T:
    """Run a use case; our errors become a status code and their message."""
    try:
        return await work()
    except HodeiError as exc:
        await context.abort(status_of(exc), message_of(exc))
        raise


async def allow(auth: ApiAuth, context: Context, needed: Role, what: str) -> Principal:
    """The caller's token (metadata `authorization: Bearer hodei_...`) and role check."""
    metadata = dict(context.invocation_metadata() or ())
    return await call(context, lambda: auth.check(metadata.get("authorization"), needed, what))
