"""The `hodei` CLI: flag parsing, errors, the SSE parser, and the REST calls against a tiny
local HTTP server (http.server in a thread) that records what it receives."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from hodei.cli import app
from hodei.cli_client import JobEnd, SSEEvent, SSEParser, parse_sse
from hodei.cli_render import clean, jobs_table
from hodei.domain.terminal import neutralise

runner = CliRunner()
UNREACHABLE = "http://127.0.0.1:1"


def run(*args: str, stdin: str | bytes | None = None) -> Result:
    return runner.invoke(app, list(args), input=stdin)


# --- a recording HTTP server ----------------------------------------------------------------

Handler = Callable[["Request"], "Reply"]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    chunks: list[bytes] | None = None  # sent chunked when set
    complete: bool = True  # False: drop the connection before the last chunk


def json_reply(payload: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(payload).encode())


@dataclass
class FakeServer:
    url: str
    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def route(self, method: str, path: str, handler: Handler | Reply) -> None:
        self.routes[(method, path)] = handler if callable(handler) else (lambda _r: handler)


def _make_handler(fake: FakeServer) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = Request(
                self.command, self.path, dict(self.headers.items()), self.rfile.read(length)
            )
            fake.requests.append(request)
            path = self.path.split("?", 1)[0]
            handler = fake.routes.get((self.command, path))
            reply = (
                handler(request)
                if handler
                else json_reply(
                    {"error": {"code": "not_found", "message": f"no route {path}"}}, 404
                )
            )
            self._send(reply)

        def _send(self, reply: Reply) -> None:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            if reply.chunks is None:
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
                return
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            for chunk in reply.chunks:
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
            if reply.complete:
                self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True

        do_GET = do_POST = do_PUT = do_DELETE = _serve

    return _Handler


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer(url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(fake))
    httpd.daemon_threads = True
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


JOB: dict[str, Any] = {
    "id": "job-1",
    "name": "build \x1b[2Jnow",
    "state": "queued",
    "exit_code": None,
    "attempts": 0,
    "labels": {"os": "linux"},
    "priority": 0,
    "worker_id": None,
    "created_at": "2024-05-01T12:00:00+00:00",
    "started_at": None,
    "finished_at": None,
    "command": "echo hi",
    "arguments": [],
    "env": {},
    "secrets": [],
    "cpu": 0.5,
    "memory_bytes": 536870912,
    "timeout_s": 30.0,
    "max_retries": 0,
    "reason": "no worker has label os=linux\x07",
    "queued_by": "cli",
}


# --- parsing and errors without a server -----------------------------------------------------


def test_help_lists_every_command() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in (
        "server",
        "agent",
        "submit",
        "logs",
        "jobs",
        "show",
        "cancel",
        "retry",
        "workers",
        "secret",
        "worker-otp",
    ):
        assert command in result.stdout
    secret_help = run("secret", "--help")
    for command in ("set", "list", "rm"):
        assert command in secret_help.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["submit", "--label", "foo", "--", "true"], "--label"),
        (["submit", "--timeout", "5 parsecs", "--", "true"], "--timeout"),
        (["submit", "--memory", "lots", "--", "true"], "--memory"),
        (["submit", "--env", "NOEQUALS", "--", "true"], "--env"),
        (["submit"], "nothing to run"),
        (["worker-otp", "--ttl", "soon"], "--ttl"),
        (["jobs", "--state", "sleeping"], "--state"),
        (["jobs", "--label", "os"], "--label"),
        (["jobs", "--label", "bad key=x"], "--label"),
        (["jobs", "--label", "os=linux", "--label", "os=mac"], "--label"),
        (["jobs", "--pipeline", "not-a-run"], "--pipeline"),
        (["jobs", "--name", "x" * 201], "--name"),
        (["jobs", "--server", "ftp://host"], "--server"),
        (["agent"], "OTP"),
        (["server", "--worker-idle", "never"], "--worker-idle"),
    ],
)
def test_bad_flags_exit_2_without_traceback(args: list[str], needle: str) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_server_settings_are_validated() -> None:
    result = run("server", "--provider", "nomad", "--home", "/tmp/hodei-test-unused")
    assert result.exit_code == 2
    assert "error: unknown or unavailable provider" in result.stderr


def test_server_builds_settings_and_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys
    import types

    seen: dict[str, Any] = {}

    def run_server(settings: Any) -> int:
        seen["settings"] = settings
        return 0

    module = types.ModuleType("hodei.server.app")
    module.run_server = run_server  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hodei.server.app", module)
    monkeypatch.setenv("HODEI_MAX_WORKERS", "7")
    result = run("server", "--home", str(tmp_path), "--worker-idle", "2m", "--demo")
    assert result.exit_code == 0, result.output
    settings = seen["settings"]
    assert settings.home == tmp_path
    assert settings.max_workers == 7
    assert settings.worker_idle_s == 120
    assert settings.demo is True


@pytest.mark.parametrize(
    "args",
    [
        ["jobs"],
        ["show", "x"],
        ["logs", "x"],
        ["logs", "-f", "x"],
        ["submit", "--", "true"],
        ["workers"],
        ["secret", "list"],
        ["worker-otp"],
    ],
)
def test_unreachable_server_exits_2(args: list[str]) -> None:
    cut = args.index("--") if "--" in args else len(args)
    result = run(*args[:cut], "--server", UNREACHABLE, *args[cut:])
    assert result.exit_code == 2, result.output
    assert "error: cannot reach the Hodei server at http://127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.output


def test_server_url_from_env() -> None:
    result = runner.invoke(app, ["jobs"], env={"HODEI_URL": UNREACHABLE})
    assert result.exit_code == 2
    assert "127.0.0.1:1" in result.stderr


# --- the SSE parser ---------------------------------------------------------------------------


def test_sse_events_split_across_reads() -> None:
    stream = b'id: 6\nevent: log\ndata: "hello\\n"\n\nid: 12\nevent: log\ndata: "world\\n"\n\n'
    whole = parse_sse([stream])
    for size in (1, 2, 3, 7):
        pieces = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert parse_sse(pieces) == whole
    assert whole == [
        SSEEvent("log", '"hello\\n"', "6"),
        SSEEvent("log", '"world\\n"', "12"),
    ]


def test_sse_multiline_data_comments_and_line_ends() -> None:
    stream = [
        b": keep-alive\r\n\r\n",
        b"event: end\r",
        b'\ndata: {"state":\r\ndata:  "failed"}\r\rdata: x\n\n',
        b"retry: 1500\nid: 9\ndata:no space\n\n",
    ]
    events = parse_sse(stream)
    assert events == [
        SSEEvent("end", '{"state":\n "failed"}', None),
        SSEEvent("message", "x", None),
        SSEEvent("message", "no space", "9", 1500),
    ]


def test_sse_id_commits_only_when_the_event_is_complete() -> None:
    parser = SSEParser("3")
    assert parser.feed(b'id: 6\nevent: log\ndata: "abc"\n') == []
    assert parser.last_event_id == "3"  # the event is incomplete: a reconnect resumes at 3
    assert parser.feed(b"\n") == [SSEEvent("log", '"abc"', "6")]
    assert parser.last_event_id == "6"


def test_job_end_exit_status() -> None:
    assert JobEnd("succeeded", 0).process_exit == 0
    assert JobEnd("failed", 3).process_exit == 3
    assert JobEnd("failed", None).process_exit == 1
    assert JobEnd("cancelled", None).process_exit == 1
    assert JobEnd("timed_out", 0).process_exit == 1
    assert JobEnd("failed", -9).process_exit == 137


def test_render_neutralises_control_characters() -> None:
    assert clean("a\x1b[2Jb\x07\u202e") == "a\\x1b[2Jb\\x07\\u202e"
    table = jobs_table([JOB])
    assert "\x1b" not in table and "job-1" in table


# --- against a local HTTP server --------------------------------------------------------------


def test_submit_posts_the_spec_and_prints_the_bare_id(server: FakeServer) -> None:
    server.route("POST", "/api/v1/jobs", json_reply(JOB, 201))
    result = run(
        "submit", "--server", server.url, "--name", "n", "--label", "os=linux",
        "--cpu", "0.5", "--memory", "512M", "--timeout", "30s", "--retries", "2",
        "--priority", "5", "--env", "A=1", "--env", "B=x=y", "--secret", "TOKEN",
        "--id", "job-1", "--", "sh -c 'echo hi'",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == "job-1\n"
    body = server.requests[-1].json()
    assert body == {
        "command": "sh -c 'echo hi'",
        "arguments": [],
        "name": "n",
        "labels": {"os": "linux"},
        "env": {"A": "1", "B": "x=y"},
        "secrets": ["TOKEN"],
        "cpu": 0.5,
        "memory_bytes": 512 * 1024 * 1024,
        "timeout_s": 30.0,
        "max_retries": 2,
        "priority": 5,
        "id": "job-1",
    }


def test_submit_infra_retry_options_and_show_says_whose_fault(server: FakeServer) -> None:
    server.route("POST", "/api/v1/jobs", json_reply(JOB, 201))
    result = run("submit", "--server", server.url, "--infra-retries", "5", "--", "true")
    assert result.exit_code == 0, result.output
    assert server.requests[-1].json()["infra_retries"] == 5
    assert "no_infra_retry" not in server.requests[-1].json()
    result = run("submit", "--server", server.url, "--no-infra-retry", "--", "true")
    assert result.exit_code == 0, result.output
    body = server.requests[-1].json()
    assert body["no_infra_retry"] is True and "infra_retries" not in body
    for bad in ("-1", "101", "x"):
        refused = run("submit", "--server", server.url, "--infra-retries", bad, "--", "true")
        assert refused.exit_code == 2 and refused.stderr.startswith("error: "), bad
    lost = {"number": 1, "state": "failed", "failure": "worker_lost", "reason": "worker w lost"}
    own = {"number": 2, "state": "failed", "exit_code": 3, "failure": "job", "reason": "exit 3"}
    shown = {
        **JOB,
        "max_retries": 1,
        "retries_used": 1,
        "infra_retries": 2,
        "infra_retries_used": 1,
        "attempt_history": [lost, own],
    }
    server.route("GET", "/api/v1/jobs/job-1", json_reply(shown))
    result = run("show", "job-1", "--server", server.url)
    assert result.exit_code == 0, result.output
    assert "retries used:" in result.stdout
    assert "1 of 1; after platform faults 1 of 2" in result.stdout
    assert "platform: worker lost" in result.stdout and "the job's own" in result.stdout


def test_submit_argv_and_script(server: FakeServer, tmp_path: Path) -> None:
    server.route("POST", "/api/v1/jobs", json_reply(JOB, 201))
    assert run("submit", "--server", server.url, "--", "echo", "-n", "a b").exit_code == 0
    body = server.requests[-1].json()
    assert (body["command"], body["arguments"]) == ("echo", ["-n", "a b"])
    assert run("submit", "--server", server.url, "ls", "-la").exit_code == 0
    assert server.requests[-1].json()["arguments"] == ["-la"]
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\necho one\necho two\n")
    assert run("submit", "--server", server.url, "--script", str(script)).exit_code == 0
    assert server.requests[-1].json()["command"] == script.read_text()
    assert run("submit", "--server", server.url, "--script", "-", stdin="date\n").exit_code == 0
    assert server.requests[-1].json()["command"] == "date\n"


def test_jobs_json_is_the_server_json_verbatim(server: FakeServer) -> None:
    payload = b'{"items": [' + json.dumps(JOB).encode() + b'], "next": "17"}'
    server.route("GET", "/api/v1/jobs", Reply(body=payload))
    result = run("jobs", "--server", server.url, "-o", "json", "--state", "queued")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == payload + b"\n"
    assert "state=queued" in server.requests[-1].path
    table = run("jobs", "--server", server.url)
    assert table.exit_code == 0
    assert "job-1" in table.stdout and "queued" in table.stdout
    assert "\x1b" not in table.stdout


def test_jobs_filters_are_sent_as_query(server: FakeServer) -> None:
    server.route("GET", "/api/v1/jobs", json_reply({"items": [], "next": None}))
    run_id = "r" + "0123456789abcdef0"
    result = run(
        "jobs", "--server", server.url, "--name", "Build", "-l", "os=linux", "--label",
        "arch=arm64", "--pipeline", run_id,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "no jobs" in result.stdout
    path = server.requests[-1].path
    for part in ("name=Build", "label=os%3Dlinux", "label=arch%3Darm64", f"pipeline={run_id}"):
        assert part in path


def test_show_human_view_lists_reason_safely(server: FakeServer) -> None:
    server.route("GET", "/api/v1/jobs/job-1", json_reply(JOB))
    result = run("show", "job-1", "--server", server.url)
    assert result.exit_code == 0, result.output
    assert "reason:" in result.stdout and "no worker has label os=linux\\x07" in result.stdout
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    raw = run("show", "job-1", "--server", server.url, "-o", "json")
    assert json.loads(raw.stdout) == JOB


def test_not_found_prints_error_and_exits_1(server: FakeServer) -> None:
    result = run("show", "nope", "--server", server.url)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    error = json_reply({"error": {"code": "not_found", "message": "no job 'nope'"}}, 404)
    server.route("POST", "/api/v1/jobs/nope/cancel", error)
    result = run("cancel", "nope", "--server", server.url)
    assert result.exit_code == 1
    assert result.stderr == "error: no job 'nope'\n"
    assert result.stdout == ""


def test_cancel_retry_confirm(server: FakeServer) -> None:
    server.route("POST", "/api/v1/jobs/job-1/cancel", json_reply({**JOB, "state": "cancelled"}))
    server.route("POST", "/api/v1/jobs/job-1/retry", json_reply({**JOB, "state": "queued"}))
    assert run("cancel", "job-1", "--server", server.url).stdout == "job job-1 cancelled\n"
    result = run("retry", "job-1", "--server", server.url)
    assert result.exit_code == 0
    assert result.stdout == "job-1\n" and "queued" in result.stderr


def test_secret_set_reads_stdin(server: FakeServer) -> None:
    server.route("PUT", "/api/v1/secrets/API_KEY", json_reply({"name": "API_KEY"}))
    result = run("secret", "set", "API_KEY", "--server", server.url, stdin="s3cr3t\n\n")
    assert result.exit_code == 0, result.output
    assert server.requests[-1].json() == {"value": "s3cr3t\n"}  # one newline stripped
    assert "s3cr3t" not in result.output
    empty = run("secret", "set", "API_KEY", "--server", server.url, stdin="\n")
    assert empty.exit_code == 2 and "empty" in empty.stderr


def test_worker_otp_prints_the_otp_alone(server: FakeServer) -> None:
    reply = {"worker_id": "w1", "otp": "abc123", "expires_at": "2024-05-01T12:10:00Z"}
    server.route("POST", "/api/v1/workers/otp", json_reply(reply, 201))
    result = run("worker-otp", "--server", server.url, "--label", "gpu=1", "--ttl", "5m")
    assert result.exit_code == 0, result.output
    assert result.stdout == "abc123\n"
    assert server.requests[-1].json() == {"labels": {"gpu": "1"}, "ttl_s": 300.0}


def test_logs_shows_the_view_and_raw_writes_the_bytes(server: FakeServer) -> None:
    log = b"\x1b[32mgreen\x1b[0m\n\xff raw \x9b2J\n"
    server.route("GET", "/api/v1/jobs/job-1/logs", Reply(body=log, content_type="text/plain"))
    result = run("logs", "job-1", "--server", server.url)
    assert result.exit_code == 0
    assert result.stdout_bytes == b"\x1b[32mgreen\x1b[0m\n\\xff raw \\x9b2J\n"
    result = run("logs", "--raw", "job-1", "--server", server.url)
    assert result.exit_code == 0
    assert result.stdout_bytes == log


def _sse64(offset: int, data: bytes) -> bytes:
    return b"id: %d\nevent: log\ndata: %s\n\n" % (offset, base64.b64encode(data))


@pytest.mark.parametrize("raw", [False, True], ids=["view", "raw"])
def test_follow_rebuilds_the_bytes_from_base64_events(server: FakeServer, raw: bool) -> None:
    log = b"\x1b[31mred\x1b[0m \xe2\x9c\x93 \x9b2J \xff\x00\n"
    end = b'event: end\ndata: {"state": "succeeded", "exit_code": 0}\n\n'
    cut = 13  # inside the UTF-8 of the check mark
    server.route(
        "GET",
        "/api/v1/jobs/job-1/logs/stream",
        Reply(
            chunks=[_sse64(cut, log[:cut]), _sse64(len(log), log[cut:]), end],
            content_type="text/event-stream",
        ),
    )
    result = run("logs", "-f", *(["--raw"] if raw else []), "job-1", "--server", server.url)
    assert result.exit_code == 0
    assert result.stdout_bytes == (log if raw else neutralise(log))
    assert "encoding=base64" in server.requests[-1].path


def _sse(offset: int, text: str) -> bytes:
    return f"id: {offset}\nevent: log\ndata: {json.dumps(text)}\n\n".encode()


@pytest.mark.parametrize("complete", [False, True], ids=["dropped", "ended-early"])
def test_logs_follow_reconnects_with_last_event_id(server: FakeServer, complete: bool) -> None:
    first, second, third = "hello\n", "\x1b[31mred\x1b[0m\n", "bye\n"
    o1 = len(first.encode())
    o2 = o1 + len(second.encode())
    o3 = o2 + len(third.encode())
    end = b'event: end\ndata: {"state": "failed", "exit_code": 3}\n\n'

    def stream(request: Request) -> Reply:
        last = request.headers.get("Last-Event-ID")
        if last is None:  # first connection: one whole event, then half of the next
            partial = _sse(o2, second)[:20]
            return Reply(chunks=[b": hi\n\n" + _sse(o1, first), partial],
                         content_type="text/event-stream", complete=complete)  # fmt: skip
        assert last == str(o1)
        return Reply(chunks=[_sse(o2, second)[:5], _sse(o2, second)[5:] + _sse(o3, third), end],
                     content_type="text/event-stream")  # fmt: skip

    server.route("GET", "/api/v1/jobs/job-1/logs/stream", stream)
    result = run("logs", "-f", "job-1", "--server", server.url)
    assert result.stdout == first + second + third
    assert result.exit_code == 3
    assert "failed" in result.stderr
    streams = [r for r in server.requests if "/logs/stream?" in r.path]
    assert len(streams) == 2


def test_submit_follow_exits_with_the_job_code(server: FakeServer) -> None:
    server.route("POST", "/api/v1/jobs", json_reply(JOB, 201))
    end = b'event: end\ndata: {"state": "cancelled", "exit_code": null}\n\n'
    server.route(
        "GET",
        "/api/v1/jobs/job-1/logs/stream",
        Reply(chunks=[_sse(3, "hi\n"), end], content_type="text/event-stream"),
    )
    result = run("submit", "-f", "--server", server.url, "--", "echo hi")
    assert result.stdout == "hi\n"
    assert result.exit_code == 1
    assert "cancelled" in result.stderr


def test_follow_unknown_job_is_404(server: FakeServer) -> None:
    result = run("logs", "-f", "ghost", "--server", server.url)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")


# --- hostile output: escape sequences that would rewrite the terminal -----------------------

HOSTILE = b"\x1b[32mok\x1b[0m \x1b[2J\x1b[H\x1b]0;pwned\x07 \x1b]8;;http://x\x1b\\link\n"
HOSTILE_SHOWN = (
    b"\x1b[32mok\x1b[0m \\x1b[2J\\x1b[H\\x1b]0;pwned\\x07 \\x1b]8;;http://x\\x1b\\link\n"
)


def test_logs_neutralises_escape_sequences_but_keeps_colours(server: FakeServer) -> None:
    server.route("GET", "/api/v1/jobs/job-1/logs", Reply(body=HOSTILE, content_type="text/plain"))
    result = run("logs", "job-1", "--server", server.url)
    assert result.exit_code == 0
    assert result.stdout_bytes == HOSTILE_SHOWN


def test_follow_neutralises_escape_sequences_split_across_events(server: FakeServer) -> None:
    text = HOSTILE.decode()
    cut = text.index("\x1b[H") + 1  # an ESC at the end of one event, its rest in the next
    end = b'event: end\ndata: {"state": "succeeded", "exit_code": 0}\n\n'
    server.route(
        "GET",
        "/api/v1/jobs/job-1/logs/stream",
        Reply(
            chunks=[_sse(cut, text[:cut]), _sse(len(HOSTILE), text[cut:]), end],
            content_type="text/event-stream",
        ),
    )
    result = run("logs", "-f", "job-1", "--server", server.url)
    assert result.exit_code == 0
    assert result.stdout_bytes == HOSTILE_SHOWN


def test_error_messages_are_neutralised(server: FakeServer) -> None:
    body = json.dumps({"error": {"code": "not_found", "message": "no job '\x1b[2Jx'"}})
    server.route("GET", "/api/v1/jobs/x", Reply(status=404, body=body.encode()))
    result = run("show", "x", "--server", server.url)
    assert result.exit_code == 1
    assert "\x1b" not in result.stderr and "\\x1b[2J" in result.stderr


def test_secret_set_refuses_a_value_too_short_to_mask(server: FakeServer) -> None:
    result = run("secret", "set", "PIN", "--server", server.url, stdin="123\n")
    assert result.exit_code == 2
    assert "at least 4 characters" in result.stderr
    assert not server.requests  # never sent
