"""ASGI middleware: each HTTP request's duration by method, route template and status class,
and the SSE streams open now. The outermost layer, so refused requests are timed too.

The route is the template the router matched (`/api/v1/jobs/{job_id}`, never the job id);
a request no route matched (a 404, or one the auth layer refused before routing) is
`unmatched`. A streaming answer (SSE) is timed until its stream ends.
"""

from __future__ import annotations

import time

from prometheus_client import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STATUS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


class StreamCount:
    """How many streams of one kind are open (read by a gauge when scraped)."""

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open = 0


class HttpMetrics:
    def __init__(self, app: ASGIApp, histogram: Histogram, sse: StreamCount) -> None:
        self.app = app
        self._histogram = histogram
        self._sse = sse
        self._children: dict[tuple[str, str, str], Histogram] = {}

    def _child(self, method: str, route: str, status: str) -> Histogram:
        key = (method, route, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._histogram.labels(method, route, status)
        return child

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers if the app raises before it starts one
        streaming = False

        async def sending(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", ()):
                    if name.lower() == b"content-type" and value.startswith(b"text/event-stream"):
                        streaming = True
                        self._sse.open += 1
                        break
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            if streaming:
                self._sse.open -= 1
            route = scope.get("route")
            template = getattr(route, "path", None) if route is not None else None
            method = scope.get("method", "GET")
            self._child(
                method if method in METHODS else "other",
                template if isinstance(template, str) else "unmatched",
                _STATUS.get(status // 100, "other"),
            ).observe(time.perf_counter() - started)
