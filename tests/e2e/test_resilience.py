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


def static_agent(server: RunningServer, grpc_addr: str, slots: int = 25) -> subprocess.Popen[bytes]:
    otp = server.hodei("worker-otp").stdout.decode().strip()
    return subprocess.Popen(
        [sys.executable, "-m", "hodei", "agent", "--server", grpc_addr, "--slots", str(slots)],
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


def restart_on_same_ports(server_factory: type, server: RunningServer, home, *extra: str):  # type: ignore[no-untyped-def]
    import signal

    from harness import stop_server

    grpc_port = server.grpc.rsplit(":", 1)[1]
    http_port = server.url.rsplit(":", 1)[1]
    stop_server(server, signal.SIGKILL)
    return server_factory.start(
        *extra,
        "--grpc-addr",
        f"127.0.0.1:{grpc_port}",
        "--http-addr",
        f"127.0.0.1:{http_port}",
        home=home,
    )


def submit_many(server: RunningServer, n: int, command: str, *flags: str) -> list[str]:
    with server.http() as client:
        return [
            client.post("/api/v1/jobs", json={"command": command, **dict(flags)}).json()["id"]
            for _ in range(n)
        ]


def wait_all(server: RunningServer, ids: list[str], timeout: float = 90) -> dict[str, dict]:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    with server.http() as client:
        while True:
            jobs = {j: client.get(f"/api/v1/jobs/{j}").json() for j in ids}
            ended = [j for j in jobs.values() if j["state"] in ("succeeded", "failed", "cancelled")]
            if len(ended) == len(ids) or time.monotonic() > deadline:
                return jobs
            time.sleep(0.3)


def test_kill_9_of_the_server_while_50_jobs_run_loses_none(server_factory: type, tmp_path) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "k9"
    server = server_factory.start("--max-workers", "0", home=home)
    agents = [static_agent(server, server.grpc) for _ in range(2)]
    try:
        ids = submit_many(server, 50, "sleep 3; echo done-$HODEI_JOB_ID")
        deadline = time.monotonic() + 30
        with server.http() as client:
            while time.monotonic() < deadline:
                running = client.get("/api/v1/jobs?state=running&limit=1000").json()["items"]
                if len(running) >= 10:
                    break
                time.sleep(0.1)
        assert running
        again = restart_on_same_ports(server_factory, server, home, "--max-workers", "0")
        jobs = wait_all(again, ids)
        assert {j["state"] for j in jobs.values()} == {"succeeded"}
        with again.http() as client:
            for job_id in jobs:  # each ran once to completion, with its log complete
                log = client.get(f"/api/v1/jobs/{job_id}/logs").text
                assert log == f"done-{job_id}\n"
        assert all(j["attempts"] == 1 for j in jobs.values())
    finally:
        for a in agents:
            stop(a)


def test_a_local_worker_gone_with_the_server_has_its_job_settled_after_the_grace(
    server_factory: type,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    import os
    import signal

    import psutil

    home = tmp_path / "k9local"
    flags = ("--max-workers", "1", "--worker-grace", "4s", "--retry-backoff", "100ms")
    server = server_factory.start(*flags, home=home)
    with server.http() as client:
        job_id = client.post(
            "/api/v1/jobs",
            json={
                "command": 'echo ok-$HODEI_ATTEMPT; [ "$HODEI_ATTEMPT" = 2 ] || sleep 300',
                "max_retries": 1,
            },
        ).json()["id"]
    first = server.wait_state(job_id, {"running"})
    (agent,) = server.agent_pids()
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(10)
    os.kill(agent, signal.SIGKILL)  # the worker really is gone (its job dies with it)
    psutil.Process(agent).wait(10)
    again = restart_on_same_ports(server_factory, server, home, *flags)
    started = time.monotonic()
    with again.http() as client:
        while time.monotonic() - started < 3:  # within the grace period: still waiting for it
            job = client.get(f"/api/v1/jobs/{job_id}").json()
            assert job["state"] == "running" and job["attempts"] == 1, job
            time.sleep(0.2)
    done = again.wait_state(job_id, {"succeeded", "failed"}, timeout=30)
    assert time.monotonic() - started >= 3
    assert done["state"] == "succeeded" and done["attempts"] == 2
    assert done["worker_id"] != first["worker_id"]
    with again.http() as client:
        (lost, second) = client.get(f"/api/v1/jobs/{job_id}/attempts").json()["items"]
        assert "did not come back" in str(lost["reason"]) or "lost" in str(lost["reason"]), lost
        assert lost["failure"] == "server_restart", lost  # the platform's fault, not the job's
        assert second["state"] == "succeeded"
        assert client.get(f"/api/v1/jobs/{job_id}/logs?attempt=2").text == "ok-2\n"
