"""REST routes of job output: the log's bytes, and its live Server-Sent Events stream.

Both serve the stored bytes as they are. `GET .../logs` answers with them untouched (as
`application/octet-stream` when the client's Accept asks for it, else `text/plain` even
when they are not valid UTF-8). The SSE stream's `log` events carry, by default, a JSON
string of the text (bytes not valid UTF-8 replaced by U+FFFD: the compatible form); with
`?encoding=base64` each event's data is the base64 of the raw bytes, so a client rebuilds
them exactly. Either way an event's id is the byte offset just after its data.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Annotated, Literal

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
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    data = await services.api.read_log(job_id, attempt, offset)
    binary = accept is not None and "application/octet-stream" in accept.lower()
    media = "application/octet-stream" if binary else "text/plain; charset=utf-8"
    return Response(data, media_type=media)


@router.get("/api/v1/jobs/{job_id}/logs/stream")
async def stream(
    job_id: str,
    services: Services,
    attempt: Annotated[int | None, Query(ge=1, le=MAX_ATTEMPT)] = None,
    offset: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
    encoding: Annotated[Literal["text", "base64"], Query()] = "text",
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    api = services.api
    start = _parse_resume(last_event_id, offset)
    await api.resolve_attempt(job_id, attempt)  # a 404 before the stream starts
    pieces = api.follow(job_id, attempt, start)
    events = sse_base64_events(pieces, start) if encoding == "base64" else sse_events(pieces, start)
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
        yield _end_event(offset, piece)


async def sse_base64_events(
    pieces: AsyncIterator[LogPiece | Job], start: int
) -> AsyncIterator[bytes]:
    """`?encoding=base64`: each `log` event's data is the base64 of the bytes, as stored."""
    offset = start
    async for piece in pieces:
        if isinstance(piece, LogPiece):
            offset += len(piece.data)
            yield b"id: %d\nevent: log\ndata: %s\n\n" % (offset, base64.b64encode(piece.data))
        else:
            yield _end_event(offset, piece)


def _log_event(offset: int, data: bytes) -> bytes:
    text = data.decode("utf-8", "replace")
    return b"id: %d\nevent: log\ndata: %s\n\n" % (offset, orjson.dumps(text))


def _end_event(offset: int, job: Job) -> bytes:
    end = {
        "state": job.state.value,
        "exit_code": job.exit_code,
        "reason": job.reason,
        "attempt": job.attempts,
    }
    return b"id: %d\nevent: end\ndata: %s\n\n" % (offset, orjson.dumps(end))


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
