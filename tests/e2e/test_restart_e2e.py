"""A crash of the server does not kill its local workers' jobs: the agents outlive it for the
grace period and reconnect to the restarted server, which adopts them; with no server back in
time they end their jobs and exit."""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from harness import RunningServer, start_server, stop_server

pytestmark = pytest.mark.e2e

Job = dict[str, Any]


@pytest.fixture
def servers() -> Iterator[list[RunningServer]]:
    """Servers started by a test, stopped newest first (the newest holds the agents, which
    keep the stderr of the first open)."""
    started: list[RunningServer] = []
    yield started
    for server in reversed(started):
        stop_server(server)


def kill_9(server: RunningServer) -> None:
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(10)


def restart(server: RunningServer, home: Path, *flags: str) -> RunningServer:
    """kill -9 the server, then start it again on the same home and the same ports."""
    grpc_port = server.grpc.rsplit(":", 1)[1]
    http_port = server.url.rsplit(":", 1)[1]
    kill_9(server)
    return start_server(
        home,
        *flags,
        "--grpc-addr",
        f"127.0.0.1:{grpc_port}",
        "--http-addr",
        f"127.0.0.1:{http_port}",
    )


def submit(server: RunningServer, n: int, command: str) -> list[str]:
    with server.http() as client:
        return [
            client.post("/api/v1/jobs", json={"command": command}).json()["id"] for _ in range(n)
        ]


def jobs_of(server: RunningServer, ids: list[str]) -> dict[str, Job]:
    with server.http() as client:
        return {j: client.get(f"/api/v1/jobs/{j}").json() for j in ids}


def all_in(server: RunningServer, ids: list[str], states: set[str]) -> dict[str, Job]:
    """The jobs when every one is in `states`, else an empty dict."""
    jobs = jobs_of(server, ids)
    return jobs if all(j["state"] in states for j in jobs.values()) else {}


def wait_for(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.1)


def connected_workers(server: RunningServer) -> list[dict[str, Any]]:
    with server.http() as client:
        items: list[dict[str, Any]] = client.get("/api/v1/workers").json()["items"]
    return [w for w in items if w["state"] != "starting"]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def marked(marker: str) -> list[int]:
    """Live processes (other than this one) whose environment holds `marker`."""
    found = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ and not gone(int(entry.name)):
            found.append(int(entry.name))
    return found


def test_kill_9_of_the_server_while_30_local_jobs_run_loses_none(
    tmp_path: Path, servers: list[RunningServer]
) -> None:
    home = tmp_path / "home"
    flags = ("--max-workers", "6", "--worker-slots", "5", "--worker-idle", "5m")
    flags += ("--worker-grace", "30s")
    first = start_server(home, *flags)
    servers.append(first)
    # Workers first (a warm-up), so that the 30 jobs all start within a moment of each other:
    # 30 jobs queued at once (one batch) that outlast the workers' start, so six are needed.
    with first.http() as client:
        batch = client.post("/api/v1/jobs/batch", json={"jobs": [{"command": "sleep 1"}] * 30})
    warm = [item["id"] for item in batch.json()["items"]]
    wait_for("six connected workers", lambda: len(connected_workers(first)) == 6, 60)
    wait_for("the warm-up", lambda: all_in(first, warm, {"succeeded"}), 60)

    ids = submit(first, 30, "sleep 3; echo ok")
    before = wait_for("30 running jobs", lambda: all_in(first, ids, {"running"}), 10)
    agents = first.agent_pids()
    assert len(agents) == 6
    again = restart(first, home, *flags)
    servers.append(again)
    assert not any(gone(pid) for pid in agents)  # they outlived the server
    assert any("adopted 6 local worker(s)" in line for line in again.stderr)

    ended = {"succeeded", "failed", "cancelled"}
    jobs = wait_for("30 ended jobs", lambda: all_in(again, ids, ended), 60)
    assert [j["state"] for j in jobs.values()] == ["succeeded"] * 30, [
        (j["state"], j["reason"]) for j in jobs.values() if j["state"] != "succeeded"
    ]
    with again.http() as client:
        for job_id, job in jobs.items():
            assert job["attempts"] == 1 and job["exit_code"] == 0  # none ran twice
            assert job["worker_id"] == before[job_id]["worker_id"]  # on the same worker
            assert client.get(f"/api/v1/jobs/{job_id}/logs").text == "ok\n"
            (attempt,) = client.get(f"/api/v1/jobs/{job_id}/attempts").json()["items"]
            assert attempt["state"] == "succeeded"
    # The adopted agents are the restarted server's own workers: shown as local, and stopped
    # with it.
    workers = connected_workers(again)
    assert len(workers) == 6 and {w["provider"] for w in workers} == {"local"}
    stop_server(again)
    wait_for("the adopted agents to stop", lambda: all(gone(pid) for pid in agents), 20)


def test_with_no_server_back_the_local_agents_end_their_jobs_and_exit(
    tmp_path: Path, servers: list[RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = f"E2E_RESTART_MARK={secrets.token_hex(8)}"  # agents and their jobs inherit it
    monkeypatch.setenv(*marker.split("=", 1))
    grace = 3.0
    server = start_server(
        tmp_path / "home", "--max-workers", "2", "--worker-slots", "2", "--worker-grace", "3s"
    )
    servers.append(server)
    ids = submit(server, 4, "sleep 300")
    wait_for("4 running jobs", lambda: all_in(server, ids, {"running"}), 60)
    agents = server.agent_pids()
    assert len(agents) == 2
    assert set(agents) < set(marked(marker))  # the agents, and the jobs' processes
    sleeps = [p for p in marked(marker) if psutil.Process(p).name() == "sleep"]
    assert len(sleeps) == 4

    kill_9(server)
    killed = time.monotonic()
    time.sleep(grace / 2)
    assert not any(gone(pid) for pid in agents + sleeps)  # not before the grace period
    wait_for("every agent and job to end", lambda: not marked(marker), grace + 10)
    assert time.monotonic() - killed >= grace / 2


def test_an_adopted_agent_that_does_not_reconnect_is_stopped_after_the_grace(
    tmp_path: Path, servers: list[RunningServer]
) -> None:
    home = tmp_path / "home"
    first = start_server(home, "--max-workers", "1", "--worker-grace", "60s")
    servers.append(first)
    (job_id,) = submit(first, 1, "sleep 300")
    first.wait_state(job_id, {"running"}, timeout=60)
    (agent,) = first.agent_pids()
    kill_9(first)
    # On another gRPC port: the agent (which would keep trying for a minute) cannot get back.
    second = start_server(home, "--max-workers", "1", "--worker-grace", "3s")
    servers.append(second)
    restarted = time.monotonic()
    assert any("adopted 1 local worker(s)" in line for line in second.stderr)
    time.sleep(1.5)
    assert not gone(agent)  # not before the grace period
    wait_for("the adopted agent to be stopped", lambda: gone(agent), 20)
    assert time.monotonic() - restarted >= 2.5
    assert any("did not reconnect in time" in line for line in second.stderr)

    def first_attempt() -> dict[str, Any]:
        with second.http() as client:
            first: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}/attempts").json()["items"][0]
        return first

    # Its job is settled by the retry policy as that of a worker that did not come back.
    wait_for("the job settled", lambda: "did not come back" in str(first_attempt()["reason"]), 20)
