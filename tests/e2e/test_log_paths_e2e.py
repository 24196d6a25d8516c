"""Every way to read a log serves the stored bytes, and the CLI's view of them is one view.

A real job prints random bytes mixed with escape sequences; the REST log, the SSE stream in
base64, gRPC SubscribeLogs (with and without follow), `hodei logs --raw` and
`hodei logs -f --raw` must all give the stored file's bytes exactly, and `hodei logs` and
`hodei logs -f` the same terminal view, with no live control left in it.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import time
from pathlib import Path

import httpx
import pytest
from harness import RunningServer

from hodei._proto.hodei.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc
from hodei.cli_client import SSEEvent, SSEParser
from hodei.domain.terminal import neutralise

pytestmark = pytest.mark.e2e

ESCAPES = [
    b"\x1b[31mred\x1b[0m",
    b"\x1b[1;38;5;208m",
    b"\x1b[2J\x1b[H",
    b"\x1b]0;title\x07",
    b"\x1b]8;;http://x\x1b\\link",
    b"\x9b2J",  # 8-bit CSI, not valid UTF-8
    "\u009b6n".encode(),  # C1 CSI, valid UTF-8
    b"\r\n",
    b"progress\r",
    b"\t\x00\x08\x7f",
    "✓ é 日本\n".encode(),
    b"\xe2\x9c",  # an incomplete sequence
]


def _payload(size: int) -> bytes:
    rng = random.Random(size)
    parts: list[bytes] = []
    total = 0
    while total < size:
        part = os.urandom(rng.randint(1, 4096)) if rng.random() < 0.5 else rng.choice(ESCAPES)
        parts.append(part)
        total += len(part)
    return b"".join(parts)


def _sse(server: RunningServer, job_id: str, query: str) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    url = f"/api/v1/jobs/{job_id}/logs/stream{query}"
    with server.http() as client, client.stream("GET", url, timeout=60) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            events += parser.feed(chunk)
    return events


def _grpc(server: RunningServer, job_id: str, follow: bool) -> list[jobs_pb2.LogEvent]:
    request = jobs_pb2.SubscribeLogsRequest(job_id=common_pb2.JobId(value=job_id), follow=follow)
    with server.grpc_channel() as channel:
        stub = jobs_pb2_grpc.JobExecutionServiceStub(channel)
        return list(stub.SubscribeLogs(request, timeout=60))


def _assert_safe_view(shown: bytes) -> None:
    text = shown.decode("utf-8")  # the view is valid UTF-8
    bare = re.sub(rb"\x1b\[[0-9;:]*m", b"", shown)
    assert not [b for b in bare if b < 0x20 and b not in (0x09, 0x0A)]
    assert 0x7F not in bare
    assert not [ch for ch in text if 0x80 <= ord(ch) <= 0x9F]


def test_every_log_path_serves_the_stored_bytes(server: RunningServer, tmp_path: Path) -> None:
    source = tmp_path / "payload.bin"
    source.write_bytes(_payload(3 * 1024 * 1024))
    out = server.hodei("submit", "--", "cat", str(source))
    assert out.returncode == 0, out.stderr.decode()
    job_id = out.stdout.decode().strip()
    server.wait_state(job_id, {"succeeded"}, timeout=60)
    stored = (server.home / "logs" / job_id / "1.log").read_bytes()
    assert len(stored) >= 3 * 1024 * 1024

    with server.http() as client:
        rest = client.get(f"/api/v1/jobs/{job_id}/logs")
        assert rest.status_code == 200 and rest.content == stored
        assert rest.headers["content-type"].startswith("text/plain")
        binary = client.get(
            f"/api/v1/jobs/{job_id}/logs", headers={"Accept": "application/octet-stream"}
        )
        assert binary.headers["content-type"] == "application/octet-stream"
        assert binary.content == stored
        assert client.get(f"/api/v1/jobs/{job_id}/logs?offset=1000").content == stored[1000:]

    events = _sse(server, job_id, "?encoding=base64")
    logs = [e for e in events if e.event == "log"]
    rebuilt = b""
    for event in logs:
        rebuilt += base64.b64decode(event.data, validate=True)
        assert event.id == str(len(rebuilt))  # the id is the byte offset after the data
    assert rebuilt == stored
    assert events[-1].event == "end" and json.loads(events[-1].data)["state"] == "succeeded"
    resumed = _sse(server, job_id, f"?encoding=base64&offset={logs[0].id}")
    tail = b"".join(base64.b64decode(e.data) for e in resumed if e.event == "log")
    assert tail == stored[int(logs[0].id or 0) :]

    text_events = _sse(server, job_id, "")  # the default form: JSON strings, as before
    text = "".join(json.loads(e.data) for e in text_events if e.event == "log")
    assert text == stored.decode("utf-8", "replace")

    for follow in (False, True):
        grpc_events = _grpc(server, job_id, follow)
        assert b"".join(e.data for e in grpc_events) == stored
        assert grpc_events[-1].end and grpc_events[-1].state == "succeeded"
        assert grpc_events[-1].offset == len(stored)

    raw = server.hodei("logs", "--raw", job_id)
    raw_follow = server.hodei("logs", "-f", "--raw", job_id)
    assert raw.returncode == 0 and raw_follow.returncode == 0, raw_follow.stderr.decode()
    assert raw.stdout == stored
    assert raw_follow.stdout == stored

    shown = server.hodei("logs", job_id)
    shown_follow = server.hodei("logs", "-f", job_id)
    assert shown.returncode == 0 and shown_follow.returncode == 0
    assert shown.stdout == shown_follow.stdout == neutralise(stored)
    _assert_safe_view(shown.stdout)
    assert b"\x1b[31mred\x1b[0m" in shown.stdout  # colours kept
    assert b"\\x9b2J" in shown.stdout and b"\\u009b6n" in shown.stdout


def test_submit_follow_shows_the_view_and_raw_the_bytes(server: RunningServer) -> None:
    script = r"printf '\033[32mok\033[0m \233' ; printf '2J \302\2336n\r\n'"
    shown = server.hodei("submit", "-f", "--", script)
    assert shown.returncode == 0, shown.stderr.decode()
    assert shown.stdout == b"\x1b[32mok\x1b[0m \\x9b2J \\u009b6n\n"
    raw = server.hodei("submit", "-f", "--raw", "--", script)
    assert raw.returncode == 0
    assert raw.stdout == b"\x1b[32mok\x1b[0m \x9b2J \xc2\x9b6n\r\n"


def test_subscribe_logs_without_follow_does_not_end_a_running_job(
    server: RunningServer,
) -> None:
    out = server.hodei("submit", "--", "echo started; sleep 30")
    job_id = out.stdout.decode().strip()
    try:
        server.wait_state(job_id, {"running"})
        deadline = time.monotonic() + 20
        with server.http() as client:
            while not client.get(f"/api/v1/jobs/{job_id}/logs").content:
                assert time.monotonic() < deadline, "no output"
                time.sleep(0.05)
        events = _grpc(server, job_id, follow=False)
        assert b"".join(e.data for e in events) == b"started\n"
        assert not [e for e in events if e.end]  # the job is still running
    finally:
        with httpx.Client(base_url=server.url, headers=server.auth(), timeout=30) as client:
            client.post(f"/api/v1/jobs/{job_id}/cancel")
    server.wait_state(job_id, {"cancelled"}, timeout=30)
    events = _grpc(server, job_id, follow=False)
    assert events[-1].end and events[-1].state == "cancelled"
