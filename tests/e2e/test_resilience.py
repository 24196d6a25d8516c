"""Failures a real fleet sees: a cut network between agent and server, and server restarts."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from harness import RunningServer
from proxy import CuttableProxy

pytestmark = pytest.mark.e2e

NUMBERED = "for i in $(seq 1 {n}); do echo line-$i; sleep 0.01; done"


def static_agent(server: RunningServer, grpc_addr: str) -> subprocess.Popen[bytes]:
    otp = server.hodei("worker-otp").stdout.decode().strip()
    return subprocess.Popen(
        [sys.executable, "-m", "hodei", "agent", "--server", grpc_addr],
        env={**server.env(), "HODEI_TOKEN": otp},
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_line(server: RunningServer, job_id: str, text: bytes, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.hodei("logs", job_id).stdout:
        assert time.monotonic() < deadline, f"{text!r} never appeared in the log of {job_id}"
        time.sleep(0.1)


def stop(agent: subprocess.Popen[bytes]) -> bytes:
    if agent.poll() is None:
        agent.terminate()
    _, err = agent.communicate(timeout=30)
    return err


def test_a_network_cut_within_the_grace_period_loses_nothing(server_factory: type) -> None:
    server = server_factory.start("--max-workers", "0")
    host, port = server.grpc.rsplit(":", 1)
    with CuttableProxy(host, int(port)) as proxy:
        agent = static_agent(server, f"127.0.0.1:{proxy.port}")
        try:
            job_id = server.hodei("submit", "--", "bash", "-c", NUMBERED.format(n=400)).stdout
            job_id = job_id.decode().strip()
            wait_line(server, job_id, b"line-50\n")
            proxy.cut()
            time.sleep(10)
            proxy.restore()
            job = server.wait_state(job_id, {"succeeded", "failed"}, timeout=60)
            assert job["state"] == "succeeded" and job["attempts"] == 1
            log = server.hodei("logs", job_id).stdout.decode()
            assert log == "".join(f"line-{i}\n" for i in range(1, 401))
            assert proxy.connections >= 2  # it really reconnected
        finally:
            err = stop(agent)
    assert b"resumed session" in err


def test_past_the_grace_period_the_job_is_requeued_and_the_stale_result_refused(
    server_factory: type,
) -> None:
    server = server_factory.start("--max-workers", "0", "--worker-grace", "2s")
    host, port = server.grpc.rsplit(":", 1)
    with CuttableProxy(host, int(port)) as proxy:
        first = static_agent(server, f"127.0.0.1:{proxy.port}")
        second = None
        try:
            out = server.hodei(
                "submit",
                "--retries",
                "1",
                "--",
                "bash",
                "-c",
                "echo attempt-$HODEI_ATTEMPT; sleep 2; echo done",
            )
            job_id = out.stdout.decode().strip()
            wait_line(server, job_id, b"attempt-1")
            proxy.cut()
            queued = server.wait_state(job_id, {"queued"}, timeout=20)
            assert "lost" in str(queued["reason"]) or "did not come back" in str(queued["reason"])
            assert first.wait(20) == 1  # it killed its job at its own deadline and gave up
            proxy.restore()
            second = static_agent(server, server.grpc)
            job = server.wait_state(job_id, {"succeeded", "failed"}, timeout=30)
            assert job["state"] == "succeeded" and job["attempts"] == 2
            with server.http() as client:
                first_log = client.get(f"/api/v1/jobs/{job_id}/logs?attempt=1").content
                second_log = client.get(f"/api/v1/jobs/{job_id}/logs?attempt=2").content
            assert first_log.startswith(b"attempt-1") and b"done" not in first_log
            assert second_log == b"attempt-2\ndone\n"
        finally:
            err = stop(first)
            if second is not None:
                stop(second)
    assert b"grace period" in err or b"no longer knows" in err


def test_static_agent_survives_a_server_restart(server_factory: type, tmp_path) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "restart"
    server = server_factory.start("--max-workers", "0", home=home)
    agent = static_agent(server, server.grpc)  # the agent dials the fixed gRPC port below
    try:
        out = server.hodei("submit", "--", "bash", "-c", NUMBERED.format(n=300))
        job_id = out.stdout.decode().strip()
        wait_line(server, job_id, b"line-20\n")
        grpc_port = server.grpc.rsplit(":", 1)[1]
        http_port = server.url.rsplit(":", 1)[1]
        import signal

        from harness import stop_server

        stop_server(server, signal.SIGKILL)
        again = server_factory.start(
            "--max-workers",
            "0",
            "--grpc-addr",
            f"127.0.0.1:{grpc_port}",
            "--http-addr",
            f"127.0.0.1:{http_port}",
            home=home,
        )
        job = again.wait_state(job_id, {"succeeded", "failed"}, timeout=60)
        assert job["state"] == "succeeded" and job["attempts"] == 1
        log = again.hodei("logs", job_id).stdout.decode()
        assert log == "".join(f"line-{i}\n" for i in range(1, 301))
        shown = json.loads(again.hodei("show", job_id, "-o", "json").stdout)
        assert shown["exit_code"] == 0
    finally:
        stop(agent)
