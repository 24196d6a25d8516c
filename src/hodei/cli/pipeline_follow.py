"""Following a pipeline run live: its SSE events (each the whole run), shown redrawn in place
on a terminal or as one line per change elsewhere, with the log tail of each step that fails.

Every event carries the whole run, so a dropped stream is simply opened again (bounded, with
backoff): nothing is lost that the next event does not show.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TextIO
from urllib.parse import quote

import httpx

from hodei.cli.pipeline_render import (
    ASCII,
    UNICODE,
    Glyphs,
    changes,
    frame,
    newly_failed,
    step_line,
    tail_lines,
)
from hodei.cli_client import (
    RECONNECTS,
    ApiError,
    Client,
    SSEEvent,
    SSEParser,
    UnreachableError,
    check,
    job_path,
)

TAIL_LINES = 40
TAIL_BYTES = 64 * 1024  # enough for 40 lines of any sane log; the rest is not kept


def run_path(run_id: str, suffix: str = "") -> str:
    return f"/api/v1/pipelines/{quote(run_id, safe='')}{suffix}"


def follow_run(
    client: Client,
    run_id: str,
    on_view: Callable[[dict[str, Any]], None],
    on_idle: Callable[[], None] = lambda: None,
    *,
    reconnects: int = RECONNECTS,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Hand every view of the run to `on_view` until its `end` event; return the last view.
    `on_idle` is called on a read with no event (the server's keep-alives, every few
    seconds). A failure to connect at all, or a 4xx answer, raises at once."""
    path = run_path(run_id, "/events")
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    connected = False
    failures = 0
    while True:
        parser = SSEParser()
        try:
            with client.stream(path, headers) as response:
                if response.status_code >= 400:
                    response.read()
                    if response.status_code < 500 or not connected:
                        check(response, f"no pipeline run {run_id!r}")
                    problem = f"the server answered HTTP {response.status_code}"
                else:
                    connected = True
                    for event in _events(response, parser, on_idle):
                        failures = 0
                        view = _view(event)
                        on_view(view)
                        if event.event == "end":
                            return view
                    problem = "the run's event stream ended before the run did"
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            if not connected:
                raise UnreachableError(
                    f"cannot reach the Hodei server at {client.base_url} ({_describe(exc)})"
                ) from None
            problem = f"the run's event stream was interrupted ({_describe(exc)})"
        except httpx.HTTPError as exc:
            raise UnreachableError(
                f"bad answer from the Hodei server at {client.base_url} ({_describe(exc)})"
            ) from None
        failures += 1
        if failures > reconnects:
            raise UnreachableError(f"{problem}; gave up after {reconnects} reconnects")
        sleep(min(0.2 * 2.0 ** (failures - 1), 2.0))


def _events(
    response: httpx.Response, parser: SSEParser, on_idle: Callable[[], None]
) -> Iterator[SSEEvent]:
    for chunk in response.iter_bytes():
        events = parser.feed(chunk)
        if not events:
            on_idle()
        for event in events:
            if event.event in ("run", "end"):
                yield event


def _view(event: SSEEvent) -> dict[str, Any]:
    try:
        view = json.loads(event.data)
    except ValueError:
        view = None
    if not isinstance(view, dict) or not isinstance(view.get("steps"), list):
        raise ApiError("the server sent a run event that is not a run", 502)
    return view


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def log_tail(client: Client, job_id: str, lines: int = TAIL_LINES) -> bytes:
    """The last lines of a job's log, in its terminal-safe view (colours kept)."""
    from hodei.domain.terminal import TerminalFilter

    kept = bytearray()

    def keep(data: bytes) -> None:
        kept.extend(data)
        if len(kept) > 2 * TAIL_BYTES:
            del kept[:-TAIL_BYTES]

    client.download(
        job_path(job_id, "/logs"),
        keep,
        headers={"Accept": "application/octet-stream"},
        not_found=f"no job {job_id!r}",
    )
    view = TerminalFilter()
    return view.feed(tail_lines(bytes(kept[-TAIL_BYTES:]), lines)) + view.flush()


def glyphs_for(stream: TextIO) -> Glyphs:
    """Box-drawing characters where the stream can encode them."""
    try:
        "├─◀✓✗●○■".encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return ASCII
    return UNICODE


class LiveFrame:
    """A block of lines at the bottom of a terminal, redrawn in place; text printed "above"
    it scrolls up and stays."""

    def __init__(self, out: TextIO, size: Callable[[], tuple[int, int]] | None = None) -> None:
        self.out = out
        self._size = size or (lambda: tuple(shutil.get_terminal_size()))  # type: ignore[return-value]
        self.height = 0

    def draw(self, lines: Sequence[str], above: str = "") -> None:
        columns, rows = self._size()
        width = max(columns - 1, 10)
        # A line wider than the terminal wraps, and a block taller than it scrolls: either
        # would break moving back up to redraw, so both are cut.
        shown = [line[:width] for line in lines]
        room = max(rows - 2, 3)
        if len(shown) > room:
            shown = [*shown[: room - 1], f"... and {len(shown) - room + 1} more lines"]
        text = f"\x1b[{self.height}F\x1b[J" if self.height else ""
        text += above
        text += "".join(line + "\n" for line in shown)
        self.out.write(text)
        self.out.flush()
        self.height = len(shown)


class RunView:
    """What `hodei pipeline run -f` prints as the run goes: on a terminal the run drawn and
    redrawn in place, else a line per change; the log tail of every step that fails."""

    def __init__(
        self,
        client: Client,
        out: TextIO | None = None,
        *,
        tty: bool | None = None,
        clock: Callable[[], float] = time.time,
        tail: Callable[[str], bytes] | None = None,
    ) -> None:
        self.client = client
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.glyphs = glyphs_for(self.out)
        self.clock = clock
        self.tail = tail or (lambda job_id: log_tail(client, job_id))
        self.last: dict[str, Any] | None = None
        self.live = LiveFrame(self.out) if self.tty else None

    def on_view(self, view: dict[str, Any]) -> None:
        tails = "".join(self._tail_of(row) for row in newly_failed(self.last, view))
        if self.live is not None:
            self.live.draw(frame(view, self.clock(), self.glyphs), above=tails)
        else:
            lines = changes(self.last, view)
            self.out.write("".join(line + "\n" for line in lines) + tails)
            self.out.flush()
        self.last = view

    def on_idle(self) -> None:
        """On a terminal, the running steps' times go on."""
        if self.live is not None and self.last is not None:
            self.live.draw(frame(self.last, self.clock(), self.glyphs))

    def _tail_of(self, row: Mapping[str, Any]) -> str:
        job_id = str(row.get("job_id"))
        try:
            data = self.tail(job_id).decode("utf-8", "replace")
        except (ApiError, UnreachableError) as exc:
            data = f"(its log could not be read: {exc.message})\n"
        head = f"--- {step_line(row)}; the last {TAIL_LINES} lines of its log:"
        if data and not data.endswith("\n"):
            data += "\n"
        return f"{head}\n{data}---\n"
