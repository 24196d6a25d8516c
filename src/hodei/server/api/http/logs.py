"""REST routes of job output: the log as text, and its live Server-Sent Events stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query
from fastapi.responses import Response, StreamingResponse

from hodei.domain.jobs import Job
from hodei.errors import ValidationError
from hodei.server.api.http.deps import MAX_INT, Services
from hodei.server.core.service import LogPiece

MAX_ATTEMPT = 1 << 31

router = APIRouter()


@router.get("/api/v1/jobs/{job_id}/logs")
async def logs(
    job_id: str,
    services: Services,
    attempt: Annotated[int | None, Query(ge=1, le=MAX_ATTEMPT)] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
) -> Response:
    data = await services.api.read_log(job_id, attempt, offset)
    return Response(data, media_type="text/plain; charset=utf-8")


@router.get("/api/v1/jobs/{job_id}/logs/stream")
async def stream(
    job_id: str,
    services: Services,
    attempt: Annotated[int | None, Query(ge=1, le=MAX_ATTEMPT)] = None,
    offset: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    api = services.api
    start = _parse_resume(last_event_id, offset)
    await api.resolve_attempt(job_id, attempt)  # a 404 before the stream starts
    events = sse_events(api.follow(job_id, attempt, start), start)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


def utf8_cut(data: bytes) -> int:
    """Length of the longest prefix of `data` that does not end inside a UTF-8 sequence."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)
        if byte >= 0xC0:  # a lead byte: is its sequence complete?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= need else len(data) - back
    return len(data)


async def sse_events(pieces: AsyncIterator[LogPiece | Job], start: int) -> AsyncIterator[bytes]:
    pending = b""
    offset = start
    async for piece in pieces:
        if isinstance(piece, LogPiece):
            pending += piece.data
            cut = utf8_cut(pending)
            if cut:
                offset += cut
                yield _log_event(offset, pending[:cut])
                pending = pending[cut:]
            continue
        if pending:
            offset += len(pending)
            yield _log_event(offset, pending)
        end = {
            "state": piece.state.value,
            "exit_code": piece.exit_code,
            "reason": piece.reason,
            "attempt": piece.attempts,
        }
        yield b"id: %d\nevent: end\ndata: %s\n\n" % (offset, orjson.dumps(end))


def _log_event(offset: int, data: bytes) -> bytes:
    text = data.decode("utf-8", "replace")
    return b"id: %d\nevent: log\ndata: %s\n\n" % (offset, orjson.dumps(text))


def _parse_resume(last_event_id: str | None, offset: int | None) -> int:
    if last_event_id is not None:
        try:
            value = int(last_event_id.strip())
        except ValueError:
            raise ValidationError("Last-Event-ID must be a byte offset (an integer)") from None
        if not 0 <= value <= MAX_INT:
            raise ValidationError(f"Last-Event-ID must be between 0 and {MAX_INT}")
        return value
    return offset or 0
