"""REST routes of job output: the log's bytes (whole, from an offset, or a byte range), where
its lines start (`.../logs/index`), and its live Server-Sent Events stream.

They serve the stored bytes as they are. `GET .../logs` answers with them untouched (as
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
from fastapi.responses import JSONResponse, Response, StreamingResponse

from hodei.domain.jobs import Job
from hodei.errors import ValidationError
from hodei.server.api.http.deps import MAX_INT, Services
from hodei.server.api.http.errors import error_body
from hodei.server.api.http.ranges import content_range, parse_range
from hodei.server.core.service import JobsApi, LogPiece

MAX_ATTEMPT = 1 << 31
STREAM_ABOVE = 1 << 20  # bytes: a larger answer is read and sent in pieces
PIECE = 256 * 1024

router = APIRouter()


@router.get("/api/v1/jobs/{job_id}/logs")
async def logs(
    job_id: str,
    services: Services,
    attempt: Annotated[int | None, Query(ge=1, le=MAX_ATTEMPT)] = None,
    offset: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
    limit: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
    accept: Annotated[str | None, Header()] = None,
    range_header: Annotated[str | None, Header(alias="range")] = None,
) -> Response:
    """The attempt's bytes as stored now: from `offset` (at most `limit`), or the one byte
    range of a Range header (206; 416 when none of its bytes exists yet). Every answer says
    the log's size then (X-Log-Size) and which attempt it is (X-Log-Attempt)."""
    api = services.api
    asked = parse_range(range_header) if range_header is not None else None
    if asked is not None and (offset is not None or limit is not None):
        raise ValidationError("give either a Range header or offset and limit, not both")
    number, size = await api.log_size(job_id, attempt)
    headers = {"Accept-Ranges": "bytes", "X-Log-Size": str(size), "X-Log-Attempt": str(number)}
    binary = accept is not None and "application/octet-stream" in accept.lower()
    media = "application/octet-stream" if binary else "text/plain; charset=utf-8"
    if asked is None:
        start = min(offset or 0, size)
        length = size - start if limit is None else min(limit, size - start)
        return await _bytes(api, job_id, number, start, length, 200, media, headers)
    span = asked.within(size)
    headers["Content-Range"] = content_range(span, size)
    if span is None:
        message = f"no byte of that range is in the log yet ({size} bytes)"
        body = error_body("range_not_satisfiable", message)
        return JSONResponse(body, status_code=416, headers=headers)
    first, last = span
    return await _bytes(api, job_id, number, first, last + 1 - first, 206, media, headers)


@router.get("/api/v1/jobs/{job_id}/logs/index")
async def line_index(
    job_id: str,
    services: Services,
    attempt: Annotated[int | None, Query(ge=1, le=MAX_ATTEMPT)] = None,
) -> Response:
    """`{"attempt", "size", "lines", "block", "starts": [[offset, line], ...]}`: for every
    block of the log (64 KiB), the first line starting in or after it (server.core.logindex)."""
    index = await services.api.log_index(job_id, attempt)
    headers = {"X-Log-Size": str(index["size"]), "X-Log-Attempt": str(index["attempt"])}
    # orjson at once: FastAPI's encoder would walk a large index value by value.
    return Response(orjson.dumps(index), media_type="application/json", headers=headers)


async def _bytes(
    api: JobsApi,
    job_id: str,
    attempt: int,
    start: int,
    length: int,
    status: int,
    media: str,
    headers: dict[str, str],
) -> Response:
    """`length` bytes of the log from `start`; a large body leaves piece by piece, never whole
    in memory."""
    if length <= STREAM_ABOVE:
        data = await api.read_log_span(job_id, attempt, start, length) if length else b""
        return Response(data, status_code=status, media_type=media, headers=headers)
    pieces = _pieces(api, job_id, attempt, start, start + length)
    headers = {**headers, "Content-Length": str(length)}
    return StreamingResponse(pieces, status_code=status, media_type=media, headers=headers)


async def _pieces(
    api: JobsApi, job_id: str, attempt: int, start: int, end: int
) -> AsyncIterator[bytes]:
    while start < end:
        data = await api.read_log_span(job_id, attempt, start, min(PIECE, end - start))
        if not data:
            return  # cannot happen (the log had these bytes): the client sees a short body
        start += len(data)
        yield data


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
