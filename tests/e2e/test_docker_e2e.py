"""The Docker provider end to end: `hodei server --provider docker` as a real process, workers
as containers on a real Docker engine (.ci/services/docker.sh starts one with host networking
for workers and builds the worker image), checked as a user would, with the engine's own view.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import RunningServer, stop_server

pytestmark = pytest.mark.e2e

IMAGE = os.environ.get("HODEI_TEST_WORKER_IMAGE", "hodei-worker:latest")
SERVER_LABEL = "io.hodei.server"


@pytest.fixture
def home(tmp_path: Path, engine: Any) -> Iterator[Path]:
    path = tmp_path / "home"
    yield path
    for container in ours(engine, path):  # a failed test must not leave containers behind
        container.remove(force=True)


def start(factory: type, home: Path, *extra: str) -> RunningServer:
    server: RunningServer = factory.start(  # type: ignore[attr-defined]
        "--provider", "docker", "--worker-image", IMAGE, *extra, home=home
    )
    return server


def ours(engine: Any, home: Path) -> list[Any]:
    """The containers labelled with this home's server id (every state, running or not)."""
    id_file = home / "server-id"
    if not id_file.exists():
        return []
    label = f"{SERVER_LABEL}={id_file.read_text().strip()}"
    return list(engine.containers.list(all=True, sparse=True, filters={"label": label}))


def post(client: httpx.Client, command: str, **fields: Any) -> str:
    response = client.post("/api/v1/jobs", json={"command": command, **fields})
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


def test_ten_jobs_run_in_labelled_containers_with_their_limits(
    server_factory: type, home: Path, engine: Any
) -> None:
    server = start(server_factory, home, "--max-workers", "4", "--worker-idle", "1s")
    with server.http() as client:
        # First and alone, so the worker started for it (sized for it) is the one that runs it;
        # later jobs may run on any worker they fit.
        big = post(client, "sleep 3; echo big", memory_bytes="192M", cpu=0.5)
        job = server.wait_state(big, {"running"}, timeout=60)
        small = [post(client, f"echo out-{i}; exit {i % 3}") for i in range(9)]
    container = engine.containers.get(f"hodei-{job['worker_id']}")
    labels = container.labels
    assert labels["io.hodei.managed"] == "true"
    assert labels["io.hodei.worker-id"] == job["worker_id"]
    assert labels[SERVER_LABEL] == (home / "server-id").read_text().strip()
    host = container.attrs["HostConfig"]
    assert host["Memory"] == 192 << 20 and host["NanoCpus"] == 500_000_000
    if shutil.which("docker"):  # what a user would look at
        listed = subprocess.run(
            ["docker", "ps", "--filter", "label=io.hodei.managed=true", "--format",
             '{{.Label "io.hodei.worker-id"}}'],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.split()  # fmt: skip
        assert job["worker_id"] in listed

    assert server.wait_state(big, {"succeeded", "failed"}, timeout=60)["state"] == "succeeded"
    for i, job_id in enumerate(small):
        done = server.wait_state(job_id, {"succeeded", "failed"}, timeout=60)
        assert done["exit_code"] == i % 3 and done["attempts"] == 1
    with server.http() as client:
        for i, job_id in enumerate(small):
            assert f"out-{i}" in client.get(f"/api/v1/jobs/{job_id}/logs").text
    assert "big" in server.hodei("logs", big).stdout.decode()  # the CLI, once

    stop_server(server)
    assert ours(engine, home) == []


def test_docker_kill_of_a_busy_worker_retries_or_fails_its_job(
    server_factory: type, home: Path, engine: Any
) -> None:
    server = start(server_factory, home, "--retry-backoff", "100ms")
    with server.http() as client:
        retried = post(
            client,
            'echo attempt-$HODEI_ATTEMPT; [ "$HODEI_ATTEMPT" = 2 ] || sleep 300',
            max_retries=1,
        )
        failed = post(client, "sleep 300")
    for job_id in (retried, failed):
        worker_id = server.wait_state(job_id, {"running"}, timeout=60)["worker_id"]
        engine.containers.get(f"hodei-{worker_id}").kill()

    lost = server.wait_state(failed, {"failed", "succeeded"}, timeout=60)
    assert lost["state"] == "failed" and lost["attempts"] == 1 and lost["reason"]
    again = server.wait_state(retried, {"failed", "succeeded"}, timeout=60)
    assert again["state"] == "succeeded" and again["attempts"] == 2
    with server.http() as client:
        assert "attempt-2" in client.get(f"/api/v1/jobs/{retried}/logs?attempt=2").text


def test_no_container_is_left_after_kill_9_and_a_restart(
    server_factory: type, home: Path, engine: Any
) -> None:
    first = start(server_factory, home)
    with first.http() as client:
        job_id = post(client, "sleep 300")
    first.wait_state(job_id, {"running"}, timeout=60)
    stop_server(first, signal.SIGKILL)
    assert len(ours(engine, home)) == 1  # nothing ties a container to the server's life

    second = start(server_factory, home)
    assert ours(engine, home) == []  # reconciled before the server said it was ready
    job = second.wait_state(job_id, {"failed", "succeeded"}, timeout=30)
    assert job["state"] == "failed"  # no retries left: settled by the retry policy
    with second.http() as client:
        post(client, "sleep 300")
    deadline = time.monotonic() + 30
    while not ours(engine, home):
        assert time.monotonic() < deadline, "no worker container was started"
        time.sleep(0.1)
    stop_server(second)
    assert ours(engine, home) == []


def test_with_tls_container_workers_enroll_and_run_jobs_over_mtls(
    server_factory: type, home: Path, engine: Any
) -> None:
    server = start(server_factory, home, "--tls", "--max-workers", "1")
    out = server.hodei("submit", "-f", "--", "sh", "-c", "echo over-mtls; exit 4", timeout=120)
    assert out.returncode == 4, out.stderr.decode()
    assert out.stdout == b"over-mtls\n"
    (container,) = ours(engine, home)
    container.reload()
    env_names = {item.split("=", 1)[0] for item in container.attrs["Config"]["Env"]}
    assert {"HODEI_CA_PEM", "HODEI_ENROLL_URL"} <= env_names and "HODEI_CA" not in env_names
    listed = server.hodei("pki", "list")
    worker_id = container.labels["io.hodei.worker-id"]
    assert listed.returncode == 0 and worker_id in listed.stdout.decode(), listed.stderr
    stop_server(server)
    assert ours(engine, home) == []
