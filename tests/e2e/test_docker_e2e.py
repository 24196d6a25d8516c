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
from pathlib import Path
from typing import Any

import httpx
import pytest
from docker_containers import SERVER_LABEL, docker_home, ours
from harness import RunningServer, stop_server

pytestmark = pytest.mark.e2e
__all__ = ["docker_home"]  # the `home` fixture

IMAGE = os.environ.get("HODEI_TEST_WORKER_IMAGE", "hodei-worker:latest")


def start(factory: type, home: Path, *extra: str) -> RunningServer:
    server: RunningServer = factory.start(  # type: ignore[attr-defined]
        "--provider", "docker", "--worker-image", IMAGE, *extra, home=home
    )
    return server


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
        failed = post(client, "sleep 300", no_infra_retry=True)  # a lost worker fails it
    for job_id in (retried, failed):
        worker_id = server.wait_state(job_id, {"running"}, timeout=60)["worker_id"]
        engine.containers.get(f"hodei-{worker_id}").kill()

    lost = server.wait_state(failed, {"failed", "succeeded"}, timeout=60)
    assert lost["state"] == "failed" and lost["attempts"] == 1 and lost["reason"]
    again = server.wait_state(retried, {"failed", "succeeded"}, timeout=60)
    assert again["state"] == "succeeded" and again["attempts"] == 2
    with server.http() as client:
        assert "attempt-2" in client.get(f"/api/v1/jobs/{retried}/logs?attempt=2").text


def all_in(server: RunningServer, ids: list[str], states: set[str]) -> dict[str, Any]:
    """The jobs when every one is in `states`, else an empty dict."""
    with server.http() as client:
        jobs = {j: client.get(f"/api/v1/jobs/{j}").json() for j in ids}
    return jobs if all(j["state"] in states for j in jobs.values()) else {}


def workers_of(server: RunningServer) -> list[dict[str, Any]]:
    with server.http() as client:
        items: list[dict[str, Any]] = client.get("/api/v1/workers").json()["items"]
    return items


def wait_for(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.2)
    return value


def test_running_containers_keep_their_jobs_across_a_kill_9_and_a_restart(
    server_factory: type, home: Path, engine: Any
) -> None:
    flags = ("--max-workers", "2", "--worker-slots", "2", "--worker-idle", "5m")
    first = start(server_factory, home, *flags)
    with first.http() as client:
        # Workers first (a warm-up), so that the jobs below start within a moment of each other.
        warm = [post(client, "true") for _ in range(4)]
        wait_for("the warm-up", lambda: all_in(first, warm, {"succeeded"}), 90)
        wait_for("two workers", lambda: len(workers_of(first)) == 2, 60)
        ids = [post(client, "sleep 4; echo ok") for _ in range(4)]
    before = wait_for("4 running jobs", lambda: all_in(first, ids, {"running"}), 20)
    grpc_port, http_port = first.grpc.rsplit(":", 1)[1], first.url.rsplit(":", 1)[1]
    stop_server(first, signal.SIGKILL)
    assert len(ours(engine, home)) == 2  # nothing ties a container to the server's life

    again = start(
        server_factory,
        home,
        *flags,
        "--grpc-addr",
        f"127.0.0.1:{grpc_port}",
        "--http-addr",
        f"127.0.0.1:{http_port}",
    )
    assert len(ours(engine, home)) == 2  # adopted, not removed
    jobs = wait_for("4 ended jobs", lambda: all_in(again, ids, {"succeeded", "failed"}), 60)
    with again.http() as client:
        for job_id, job in jobs.items():
            assert job["state"] == "succeeded" and job["attempts"] == 1, job  # none ran twice
            assert job["worker_id"] == before[job_id]["worker_id"]
            assert client.get(f"/api/v1/jobs/{job_id}/logs").text == "ok\n"
    workers = workers_of(again)
    assert {w["provider"] for w in workers} == {"docker"} and len(workers) == 2
    stop_server(again)
    assert ours(engine, home) == []


def test_a_container_that_does_not_reconnect_is_removed_after_the_grace(
    server_factory: type, home: Path, engine: Any
) -> None:
    first = start(server_factory, home, "--worker-grace", "60s")
    with first.http() as client:
        job_id = post(client, "sleep 300", no_infra_retry=True)
    first.wait_state(job_id, {"running"}, timeout=60)
    stop_server(first, signal.SIGKILL)
    assert len(ours(engine, home)) == 1

    # On another gRPC port: the agent (which would keep trying for a minute) cannot get back.
    second = start(server_factory, home, "--worker-grace", "3s")
    restarted = time.monotonic()
    assert len(ours(engine, home)) == 1  # adopted: not removed before the grace period
    wait_for("the container's removal", lambda: not ours(engine, home), 30)
    assert time.monotonic() - restarted >= 2.5
    job = second.wait_state(job_id, {"failed", "succeeded"}, timeout=30)
    assert job["state"] == "failed" and job["attempts"] == 1  # settled as a lost worker
    with second.http() as client:
        post(client, "sleep 300")
    wait_for("a new worker container", lambda: ours(engine, home), 30)
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


def test_a_pipeline_hands_files_and_outputs_between_steps_in_containers(
    server_factory: type, home: Path, engine: Any
) -> None:
    """Artifacts and outputs with the image's own Python (the agent in the worker image)."""
    source = (
        "name: boxed\nsteps:\n"
        "  build:\n"
        "    run: |\n"
        "      mkdir -p dist && echo built-in-a-box > dist/app.txt\n"
        '      echo "version=2.0" >> "$HODEI_OUTPUTS"\n'
        "    artifacts: [dist/]\n"
        "    outputs: [version]\n"
        "  test:\n"
        "    needs: [build]\n"
        "    run: cat dist/app.txt && echo v${{ steps.build.outputs.version }}\n"
    )
    server = start(server_factory, home)
    with server.http() as client:
        answer = client.post("/api/v1/pipelines", json={"source": source})
        assert answer.status_code == 201, answer.text
        run_id = answer.json()["id"]
        deadline = time.monotonic() + 120
        while (run := client.get(f"/api/v1/pipelines/{run_id}").json())["state"] == "running":
            assert time.monotonic() < deadline, run
            time.sleep(0.2)
        assert run["state"] == "succeeded", run
        steps = {step["id"]: step for step in run["steps"]}
        assert steps["build"]["outputs"] == {"version": "2.0"}
        assert steps["build"]["artifact"]["size"] > 0
        log = client.get(f"/api/v1/jobs/{steps['test']['job_id']}/logs").text
        assert "built-in-a-box" in log and "v2.0" in log
        archive = client.get(f"/api/v1/jobs/{steps['build']['job_id']}/artifacts/archive")
        assert archive.status_code == 200
        assert archive.headers["x-checksum-sha256"] == steps["build"]["artifact"]["sha256"]
