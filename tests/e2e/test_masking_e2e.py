"""Secrets stay masked in every output path: live stream (SSE, CLI), stored log (REST, CLI),
gRPC SubscribeLogs, and error texts (job reason in REST and gRPC status)."""

from __future__ import annotations

import base64
import json
import sys
import uuid

import pytest
from harness import RunningServer

from hodei._proto.hodei.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc

pytestmark = pytest.mark.e2e

PY = sys.executable
SCRIPT = r"""
head -c 4090 /dev/zero | tr '\0' a; printf '%s\n' "$TOKEN"
echo "plain:$TOKEN"
printf 'bytes:'
for ((i = 0; i < ${#TOKEN}; i++)); do printf %s "${TOKEN:i:1}"; sleep 0.01; done; echo
for p in "" x xy; do printf 'b64:'; printf '%s' "$p$TOKEN" | base64 -w0; echo; done
printf 'q:%q\n' "$TOKEN"
echo "Q:${TOKEN@Q}"
"$PY" -c 'import json, os; print("json:" + json.dumps({"t": os.environ["TOKEN"]}))'
"$PY" -c 'import os, urllib.parse as u; print("url:" + u.quote(os.environ["TOKEN"], safe=""))'
printf '%s\n' "$KEY"; printf '%s\n' "$KEY" | tac
echo "::add-mask::$RUNTIME"
echo "runtime:$RUNTIME"
echo "hex:$(printf %s "$TOKEN" | od -An -tx1 | tr -d ' \n')"
"""


def grpc_log(server: RunningServer, job_id: str) -> bytes:
    with server.grpc_channel() as channel:
        stub = jobs_pb2_grpc.JobExecutionServiceStub(channel)
        request = jobs_pb2.SubscribeLogsRequest(job_id=common_pb2.JobId(value=job_id))
        return b"".join(e.data for e in stub.SubscribeLogs(request, timeout=30))


def test_secret_is_masked_in_every_output_path(server: RunningServer) -> None:
    token = f"tok-{uuid.uuid4().hex[:12]} x'y\"z/&+$"
    key = f"line-one-{uuid.uuid4().hex[:8]}\nline-two-{uuid.uuid4().hex[:8]}"
    runtime = f"rt-{uuid.uuid4().hex}"
    for name, value in (("TOKEN", token), ("KEY", key)):
        saved = server.hodei("secret", "set", name, input=value.encode())
        assert saved.returncode == 0, saved.stderr
    live = server.hodei(
        "submit", "-f", "--secret", "TOKEN", "--secret", "KEY",
        "--env", f"RUNTIME={runtime}", "--env", f"PY={PY}", "--", SCRIPT,
    )  # fmt: skip
    assert live.returncode == 0, live.stderr.decode()
    job_id = json.loads(server.hodei("jobs", "-o", "json").stdout)["items"][0]["id"]
    with server.http() as client:
        rest = client.get(f"/api/v1/jobs/{job_id}/logs").content
        sse = client.get(f"/api/v1/jobs/{job_id}/logs/stream").content
    stored = server.hodei("logs", job_id).stdout
    via_grpc = grpc_log(server, job_id)
    assert rest == stored == via_grpc  # nothing in the log needs neutralising here

    lines = rest.decode().splitlines()
    assert lines[0] == "a" * 4090 + "***"  # across the agent's 4 KiB chunk boundary
    for expected in ("plain:***", "bytes:***", "q:***", "Q:'***'", 'json:{"t": "***"}',
                     "url:***", "runtime:***"):  # fmt: skip
        assert expected in lines, (expected, lines)
    b64 = [line for line in lines if line.startswith("b64:")]
    assert len(b64) == 3 and all("***" in line for line in b64)
    # KEY whole (one mask for both lines), then its lines one by one in reverse order
    assert lines.count("***") == 3
    assert not any(line.startswith("::add-mask::") for line in lines)
    hex_form = token.encode().hex()
    assert f"hex:{hex_form}" in lines  # documented: hex is not masked

    forbidden = [token, runtime, *key.splitlines(), token[:10]]
    forbidden += [base64.b64encode(token.encode()).decode()[:12]]
    for seen in (live.stdout, rest, sse, stored, via_grpc):
        text = seen.decode("utf-8", "replace")
        for value in forbidden:
            assert value not in text


def test_secret_in_an_error_message_is_masked(server: RunningServer) -> None:
    token = f"errtok-{uuid.uuid4().hex[:12]}"
    assert server.hodei("secret", "set", "ETOKEN", input=token.encode()).returncode == 0
    out = server.hodei("submit", "--secret", "ETOKEN", "--", f"/nonexistent/{token}", "arg")
    job_id = out.stdout.decode().strip()
    job = server.wait_state(job_id, {"failed", "succeeded"})
    assert job["state"] == "failed" and job["exit_code"] == 127
    assert "cannot run '/nonexistent/***'" in str(job["reason"])
    with server.grpc_channel() as channel:
        stub = jobs_pb2_grpc.JobExecutionServiceStub(channel)
        status = stub.GetJobStatus(
            jobs_pb2.GetJobRequest(job_id=common_pb2.JobId(value=job_id)), timeout=10
        )
    assert token not in status.reason and "***" in status.reason
    shown = server.hodei("show", job_id).stdout.decode()
    reason_line = next(line for line in shown.splitlines() if line.startswith("reason:"))
    assert token not in reason_line
    assert token not in server.hodei("logs", job_id).stdout.decode()


def test_secrets_too_short_to_mask_are_refused(server: RunningServer) -> None:
    out = server.hodei("secret", "set", "PIN", input=b"123")
    assert out.returncode == 2 and b"at least 4 characters" in out.stderr
    with server.http() as client:
        r = client.put("/api/v1/secrets/PIN", json={"value": "abc"})
    assert r.status_code == 400 and "at least 4 characters" in r.json()["error"]["message"]
    assert b"PIN" not in server.hodei("secret", "list").stdout
