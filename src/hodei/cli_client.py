"""The CLI's side of the REST API: a small HTTP client and the SSE log follower.

httpx errors are converted here, at the edge, into `ApiError` (the server said no) and
`UnreachableError` (no answer), so the commands never see a transport exception.
The SSE parser is a pure, incremental function of the bytes read, so it is tested on its own.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from hodei import __version__
from hodei.errors import HodeiError, ValidationError
from hodei.security.trust import https_verify

DEFAULT_URL = "http://127.0.0.1:8080"
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
STREAM_TIMEOUT = httpx.Timeout(None, connect=5.0, write=30.0, pool=5.0)  # no read timeout
RECONNECTS = 8


class ApiError(HodeiError):
    """The server answered with an error status."""

    exit_code = 1

    def __init__(
        self, message: str, status: int, code: str = "", issues: list[Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.issues = issues or []  # a refused pipeline file's problems ({line, column, ...})


class UnreachableError(HodeiError):
    """No answer from the server (refused, timed out, dropped)."""

    exit_code = 2


def normalize_url(url: str) -> str:
    """'host:port' -> 'http://host:port'; strips a trailing slash."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


def job_path(job_id: str, suffix: str = "") -> str:
    return f"/api/v1/jobs/{quote(job_id, safe='')}{suffix}"


def error_message(response: httpx.Response) -> tuple[str, str]:
    """(code, message) from a REST error body, tolerating non-JSON bodies."""
    try:
        body = json.loads(response.content)
    except ValueError:
        text = response.content.decode("utf-8", "replace").strip()
        return "", text[:500] or f"HTTP {response.status_code} {response.reason_phrase}"
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err.get("code") or ""), str(err["message"])
        if isinstance(err, str):
            return "", err
        detail = body.get("detail")
        if detail:
            return "", detail if isinstance(detail, str) else json.dumps(detail)
    return "", f"HTTP {response.status_code} {response.reason_phrase}"


class Client:
    """Synchronous REST client for one Hodei server."""

    def __init__(
        self,
        base_url: str,
        transport: httpx.BaseTransport | None = None,
        token: str | None = None,
    ) -> None:
        self.base_url = normalize_url(base_url)
        headers = {"User-Agent": f"hodei-cli/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=TIMEOUT,
            transport=transport,
            verify=https_verify(self.base_url),  # a --tls server's CA (security.trust)
            headers=headers,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except (httpx.TimeoutException, httpx.NetworkError) as exc:
            raise UnreachableError(
                f"cannot reach the Hodei server at {self.base_url} ({_describe(exc)})"
            ) from None
        except httpx.HTTPError as exc:
            raise UnreachableError(
                f"bad answer from the Hodei server at {self.base_url} ({_describe(exc)})"
            ) from None

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        not_found: str = "",
    ) -> httpx.Response:
        """Send one request; raise ApiError on a 4xx/5xx answer."""
        check_sendable(path, json_body, params)
        with self._translate():
            response = self._http.request(method, path, json=json_body, params=params)
        check(response, not_found)
        return response

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """request() and decode the JSON body."""
        response = self.request(method, path, **kwargs)
        return decode_json(response)

    def download(
        self,
        path: str,
        write: Callable[[bytes], None],
        *,
        headers: dict[str, str] | None = None,
        not_found: str = "",
    ) -> httpx.Headers:
        """GET `path` and hand its body to `write` as it arrives, bytes untouched; returns
        the answer's headers."""
        with self._translate(), self._http.stream("GET", path, headers=headers) as response:
            if response.status_code >= 400:
                response.read()
                check(response, not_found)
            for chunk in response.iter_bytes():
                write(chunk)
            return response.headers

    @contextmanager
    def stream(self, path: str, headers: dict[str, str]) -> Iterator[httpx.Response]:
        """Open a streaming GET without a read timeout (the caller handles drops)."""
        with self._http.stream("GET", path, headers=headers, timeout=STREAM_TIMEOUT) as resp:
            yield resp


def check_sendable(path: str, json_body: Any = None, params: dict[str, Any] | None = None) -> None:
    """ValidationError, before anything is sent, for what JSON or UTF-8 cannot carry: NaN or
    infinity in a body, or text that is not valid Unicode (undecodable bytes of an argument)."""
    try:
        json.dumps(json_body, allow_nan=False, ensure_ascii=False).encode("utf-8")
        for text in (path, *(params or {}).values()):
            str(text).encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("a value is not valid UTF-8 text") from None
    except ValueError:
        raise ValidationError("a number is out of range (not finite)") from None


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check(response: httpx.Response, not_found: str = "") -> None:
    if response.status_code < 400:
        return
    code, message = error_message(response)
    if response.status_code == 404 and not_found and message.lower() in ("", "not found"):
        message = not_found
    raise ApiError(message, response.status_code, code, _issues(response))


def _issues(response: httpx.Response) -> list[Any]:
    """`error.issues` of an error body, if it has them."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return []
    err = body.get("error") if isinstance(body, dict) else None
    issues = err.get("issues") if isinstance(err, dict) else None
    return [i for i in issues if isinstance(i, dict)] if isinstance(issues, list) else []


def decode_json(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        raise ApiError(
            f"the server sent a non-JSON answer (HTTP {response.status_code})",
            response.status_code,
        ) from None


# --- Server-sent events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str
    data: str
    id: str | None  # the stream's last event id when this event was dispatched
    retry_ms: int | None = None


class SSEParser:
    """Incremental text/event-stream parser (WHATWG rules): feed bytes, get whole events.

    Handles events and lines split across reads, CRLF/CR/LF line ends, multi-line data,
    comments, `retry`. An event's id is committed only when the event is complete, so after a
    dropped connection `last_event_id` is the id of the last event fully received.
    """

    def __init__(self, last_event_id: str | None = None) -> None:
        self.last_event_id = last_event_id
        self.retry_ms: int | None = None
        self._buffer = b""
        self._skip_lf = False  # the previous read ended with CR: a leading LF belongs to it
        self._first = True
        self._reset()

    def _reset(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id = self.last_event_id

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._skip_lf = False
        self._buffer += chunk
        events: list[SSEEvent] = []
        while True:
            cr, lf = self._buffer.find(b"\r"), self._buffer.find(b"\n")
            ends = [i for i in (cr, lf) if i >= 0]
            if not ends:
                break
            end = min(ends)
            line, sep_len = self._buffer[:end], 1
            if end == cr:
                if end + 1 == len(self._buffer):
                    self._skip_lf = True
                elif self._buffer[end + 1 : end + 2] == b"\n":
                    sep_len = 2
            self._buffer = self._buffer[end + sep_len :]
            event = self._line(line.decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if self._first:
            self._first = False
            line = line.removeprefix("\ufeff")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\x00" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        self.last_event_id = self._id
        event, data = self._event or "message", self._data
        self._reset()
        if not data:
            return None
        return SSEEvent(event, "\n".join(data), self.last_event_id, self.retry_ms)


def parse_sse(chunks: list[bytes]) -> list[SSEEvent]:
    """Parse a whole byte stream given as reads (convenience for tests and tools)."""
    parser = SSEParser()
    return [event for chunk in chunks for event in parser.feed(chunk)]


# --- Following a job's log -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobEnd:
    state: str
    exit_code: int | None

    @property
    def process_exit(self) -> int:
        """The exit status a CLI should return for this end state."""
        code = self.exit_code
        if code is None:
            return 0 if self.state == "succeeded" else 1
        if code < 0:  # killed by signal -code, as a shell reports it
            code = min(128 - code, 255)
        elif code > 255:
            code = 1
        if code == 0 and self.state != "succeeded":
            return 1
        return code


def parse_end(data: str) -> JobEnd:
    try:
        body = json.loads(data)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = body.get("exit_code")
    return JobEnd(
        state=str(body.get("state") or "unknown"),
        exit_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
    )


def log_bytes(data: str) -> bytes:
    """The bytes of an SSE `log` event asked for with `?encoding=base64`.

    A server that ignores the parameter sends a JSON string (it never starts with a quote in
    base64): its text is taken as UTF-8, and anything else as raw text."""
    if not data.startswith('"'):
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return data.encode("utf-8", "replace")
    try:
        text = json.loads(data)
    except ValueError:
        text = data
    return str(text).encode("utf-8", "replace")


def follow_logs(
    client: Client,
    job_id: str,
    write: Callable[[bytes], None],
    *,
    reconnects: int = RECONNECTS,
    sleep: Callable[[float], None] = time.sleep,
) -> JobEnd:
    """Stream a job's log bytes, exactly as stored, to `write` until its end event; returns
    the end state. The stream is asked for in base64 (`?encoding=base64`), so no byte is lost.

    A drop after a successful connection (or a 5xx while the server restarts) is retried,
    bounded and with backoff, from the last complete event (`Last-Event-ID`), so nothing is
    lost or repeated. A failure to connect at all, or a 4xx answer, raises at once.
    """
    path = job_path(job_id, "/logs/stream?encoding=base64")
    last_id: str | None = None
    connected = False
    failures = 0
    while True:
        parser = SSEParser(last_id)
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        try:
            with client.stream(path, headers) as response:
                if response.status_code >= 400:
                    response.read()
                    if response.status_code < 500 or not connected:
                        check(response, f"no job {job_id!r}")
                    problem = f"the server answered HTTP {response.status_code}"
                else:
                    connected = True
                    for event in _events(response, parser):
                        failures = 0
                        if event.event == "log":
                            write(log_bytes(event.data))
                        elif event.event == "end":
                            return parse_end(event.data)
                    problem = "the log stream ended before the job did"
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            if not connected:
                raise UnreachableError(
                    f"cannot reach the Hodei server at {client.base_url} ({_describe(exc)})"
                ) from None
            problem = f"the log stream was interrupted ({_describe(exc)})"
        except httpx.HTTPError as exc:
            raise UnreachableError(
                f"bad answer from the Hodei server at {client.base_url} ({_describe(exc)})"
            ) from None
        last_id = parser.last_event_id
        failures += 1
        if failures > reconnects:
            raise UnreachableError(f"{problem}; gave up after {reconnects} reconnects")
        sleep(_backoff(failures, parser.retry_ms))


def _events(response: httpx.Response, parser: SSEParser) -> Iterator[SSEEvent]:
    for chunk in response.iter_bytes():
        yield from parser.feed(chunk)


def _backoff(failures: int, retry_ms: int | None) -> float:
    if retry_ms is not None:  # the server's `retry:` hint wins, capped
        return min(retry_ms / 1000, 5.0)
    return min(0.2 * 2.0 ** (failures - 1), 2.0)
