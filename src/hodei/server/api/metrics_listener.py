"""`--metrics-addr`: /metrics alone on a loopback address, without a token, for a Prometheus
on the same host (or a sidecar). A plain asyncio listener: one request per connection, the
request head bounded and read under a timeout, nothing but `GET /metrics` answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

HEAD_LIMIT = 8192
READ_TIMEOUT_S = 5.0


def _answer(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class MetricsListener:
    def __init__(self, host: str, port: int, render: Callable[[], bytes]) -> None:
        self._host = host
        self._port = port
        self._render = render
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=HEAD_LIMIT
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            method, _, rest = head.partition(b" ")
            path = rest.partition(b" ")[0].partition(b"?")[0]
            if path != b"/metrics":
                answer = _answer("404 Not Found", b"only /metrics here\n")
            elif method not in (b"GET", b"HEAD"):
                answer = _answer("405 Method Not Allowed", b"GET /metrics\n")
            else:
                body = self._render()
                answer = _answer("200 OK", b"" if method == b"HEAD" else body, CONTENT_TYPE_LATEST)
            writer.write(answer)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a client that sent no complete request head in time, or too long a one
        except OSError as exc:
            log.debug("metrics listener: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
