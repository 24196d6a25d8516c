"""Hostile input against a real server: oversized and malformed requests get clear errors,
output floods stay bounded, shell metacharacters stay data, escape sequences stay inert."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import grpc
import psutil
import pytest
from harness import RunningServer

from hodei._proto.hodei.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc

pytestmark = pytest.mark.e2e

GARBAGE = b"\xff\xff\xff\x0f\x12garbage that is not protobuf"


def submit(server: RunningServer, *args: str) -> str:
    out = server.hodei("submit", *args)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode().strip()


def assert_alive(server: RunningServer) -> None:
    assert server.proc.poll() is None
    with server.http() as client:
        assert client.get("/healthz").json()["status"] == "ok"
    job_id = submit(server, "--", "echo", "still-alive")
    assert server.wait_state(job_id, {"succeeded"})["exit_code"] == 0


def test_malformed_and_oversized_grpc_get_clear_errors(server: RunningServer) -> None:
    with server.grpc_channel() as channel:
        calls = {
            "QueueJob": channel.unary_unary("/hodei.v1.JobExecutionService/QueueJob"),
            "SubscribeLogs": channel.unary_stream("/hodei.v1.JobExecutionService/SubscribeLogs"),
        }
        for name, call in calls.items():
            with pytest.raises(grpc.RpcError) as caught:
                result = call(GARBAGE, timeout=10)
                if name == "SubscribeLogs":
                    list(result)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
            assert "malformed request" in (caught.value.details() or "")
        connect = channel.stream_stream("/hodei.v1.WorkerService/Connect")
        with pytest.raises(grpc.RpcError) as caught:
            list(connect(iter([GARBAGE]), timeout=10))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        stub = jobs_pb2_grpc.JobExecutionServiceStub(channel)
        huge = jobs_pb2.JobDefinition(command="x" * (17 << 20))
        with pytest.raises(grpc.RpcError) as caught:
            stub.QueueJob(jobs_pb2.QueueJobRequest(job_definition=huge), timeout=30)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in (caught.value.details() or "")
        big = jobs_pb2.JobDefinition(command="x" * (300 << 10))
        with pytest.raises(grpc.RpcError) as caught:
            stub.QueueJob(jobs_pb2.QueueJobRequest(job_definition=big), timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "command too large" in (caught.value.details() or "")
        bad_env = jobs_pb2.JobDefinition(command="true", environment={"A": "x\x00y"})
        with pytest.raises(grpc.RpcError) as caught:
            stub.QueueJob(jobs_pb2.QueueJobRequest(job_definition=bad_env), timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetJob(jobs_pb2.GetJobRequest(job_id=common_pb2.JobId(value="\x1b[2J")))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListJobs(jobs_pb2.ListJobsRequest(cursor="9" * 30), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        job_id = submit(server, "--", "echo", "hi")
        server.wait_state(job_id, {"succeeded"})
        far = jobs_pb2.SubscribeLogsRequest(
            job_id=common_pb2.JobId(value=job_id), since_offset=(1 << 64) - 1
        )
        events = list(stub.SubscribeLogs(far, timeout=10))
        assert events[-1].end and not any(e.data for e in events)
    assert not any("Traceback" in line for line in server.stderr)
    assert_alive(server)


def test_http_bodies_over_the_limit_and_malformed_json(server: RunningServer) -> None:
    big = b'{"command": "' + b"x" * (2 << 20) + b'"}'
    with server.http() as client:
        r = client.post("/api/v1/jobs", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "too_large"

        def chunks():  # no Content-Length: sent chunked
            for _ in range(64):
                yield b"x" * 65536

        r = client.post("/api/v1/jobs", content=chunks())
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        r = client.put("/api/v1/secrets/BIG", content=chunks())
        assert r.status_code == 413
        for body in (b"{not json", b"[]", b"null", b'"x"', b"\xff\xfe", b'{"command": 1}',
                     b'{"command": "x", "cpu": NaN}', b'{"command": "x", "timeout_s": 1e999}',
                     b'{"command": "x", "memory_bytes": "9999999T"}'):  # fmt: skip
            r = client.post(
                "/api/v1/jobs", content=body, headers={"content-type": "application/json"}
            )
            assert r.status_code in (400, 422), (body, r.status_code, r.text)
            assert r.json()["error"]["message"]
        r = client.post("/api/v1/jobs", json={"command": "x" * (300 << 10)})
        assert r.status_code in (400, 422)
    assert_alive(server)


def test_output_flood_is_truncated_visibly_and_memory_stays_bounded(server_factory: type) -> None:
    server: RunningServer = server_factory.start("--max-output", "1M", "--worker-idle", "60s")
    # 1 GiB on one line, no newline, then the job still ends with its own exit code.
    job_id = submit(server, "--", "head -c 1073741824 /dev/zero | tr '\\0' x; echo done; exit 7")
    job = server.wait_state(job_id, {"succeeded", "failed"}, timeout=240)
    assert job["state"] == "failed" and job["exit_code"] == 7
    agents = server.agent_pids()
    assert agents
    peak_kib = max(_peak_rss_kib(pid) for pid in agents)
    assert peak_kib < 200 * 1024, f"agent peak RSS {peak_kib} KiB"
    log = server.hodei("logs", job_id, timeout=60).stdout
    assert len(log) < (1 << 20) + 1024
    assert log.startswith(b"x" * 1000)
    assert b"[hodei: output limit of 1 MiB reached" in log
    assert log.endswith(b"more bytes of output discarded]\n")
    discarded = int(log.rsplit(b"[hodei: ", 1)[1].split()[0])
    assert discarded == (1 << 30) + len(b"done\n") - (1 << 20)


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_shell_metacharacters_stay_inert_data(server: RunningServer, tmp_path: Path) -> None:
    marks = [tmp_path / f"pwned{i}" for i in range(6)]
    name = f"$(touch {marks[0]})`touch {marks[1]}`"
    label = f"$(touch {marks[2]});touch {marks[3]}"
    env = f"$(touch {marks[4]}) `touch {marks[5]}` | && ; ' \""
    otp = server.hodei("worker-otp", "--label", f"evil={label}").stdout.decode().strip()
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hodei",
            "agent",
            "--server",
            server.grpc,
            "--label",
            f"evil={label}",
        ],
        env={**server.env(), "HODEI_TOKEN": otp},
        stderr=subprocess.DEVNULL,
    )
    try:
        job_id = submit(
            server, "--name", name, "--label", f"evil={label}", "--env", f"V={env}",
            "--", "printenv", "V",
        )  # fmt: skip
        job = server.wait_state(job_id, {"succeeded", "failed"}, timeout=60)
        assert job["state"] == "succeeded"
        assert job["name"] == name and job["labels"] == {"evil": label}
        assert server.hodei("logs", job_id).stdout.decode() == env + "\n"
        shown = server.hodei("show", job_id).stdout.decode()
        assert name in shown and label in shown
        assert name[:40] in server.hodei("jobs").stdout.decode()  # the table truncates
    finally:
        agent.terminate()
        agent.wait(10)
    assert not [m for m in marks if m.exists()]


def test_escape_sequences_are_neutralised_in_cli_output(server: RunningServer) -> None:
    script = r"printf '\033[31mred\033[0m \033[2J\033[H\033]0;title\007 \033[1A end\n'"
    out = server.hodei("submit", "-f", "--name", "x\x1b[2Jy", "--", script)
    assert out.returncode == 0
    shown = b"\x1b[31mred\x1b[0m \\x1b[2J\\x1b[H\\x1b]0;title\\x07 \\x1b[1A end\n"
    assert out.stdout == shown
    job_id = json.loads(server.hodei("jobs", "-o", "json").stdout)["items"][0]["id"]
    assert server.hodei("logs", job_id).stdout == shown
    with server.http() as client:  # the API keeps the bytes as they are
        assert b"\x1b[2J" in client.get(f"/api/v1/jobs/{job_id}/logs").content
    details = server.hodei("show", job_id).stdout
    assert b"\x1b" not in details and b"x\\x1b[2Jy" in details


def test_a_flood_of_connections_with_garbage_leaves_the_server_up(server: RunningServer) -> None:
    deadline = time.monotonic() + 20
    with server.grpc_channel() as channel:
        call = channel.unary_unary("/hodei.v1.JobExecutionService/QueueJob")
        futures = [
            call.future(GARBAGE[: i % len(GARBAGE)] + b"\xff", timeout=20) for i in range(200)
        ]
        for future in futures:
            assert time.monotonic() < deadline
            assert future.exception() is not None
            assert future.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert psutil.pid_exists(server.proc.pid)
    assert_alive(server)
