"""A worker in a Docker container with a memory limit reports its container's usage: the
limit as its memory total and its cgroup's memory in use, not the host's (on this engine's
cgroup version: v1 or v2)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from docker_containers import docker_home
from harness import stop_server

pytestmark = pytest.mark.e2e
__all__ = ["docker_home"]  # the `home` fixture

IMAGE = os.environ.get("HODEI_TEST_WORKER_IMAGE", "hodei-worker:latest")
LIMIT = 192 << 20


def test_a_container_worker_reports_its_cgroup_s_memory(
    server_factory: type, home: Path, engine: Any
) -> None:
    server = server_factory.start(  # type: ignore[attr-defined]
        "--provider", "docker", "--worker-image", IMAGE, "--heartbeat-interval", "200ms",
        home=home,
    )  # fmt: skip
    try:
        with server.http() as client:
            response = client.post(
                "/api/v1/jobs", json={"command": "sleep 60", "memory_bytes": "192M"}
            )
            assert response.status_code == 201, response.text
            job_id = response.json()["id"]
        job = server.wait_state(job_id, {"running"}, timeout=90)
        host = engine.containers.get(f"hodei-{job['worker_id']}").attrs["HostConfig"]
        assert host["Memory"] == LIMIT  # the container's limit, as the engine has it
        usage: dict[str, Any] = {}
        for _ in range(150):  # heartbeats every 200 ms: bounded wait for one from the job's
            listed = json.loads(server.hodei("workers", "-o", "json").stdout)
            worker = next(w for w in listed["items"] if w["id"] == job["worker_id"])
            usage = worker["usage"]
            if usage["memory_total_bytes"] and usage["memory_bytes"]:
                break
            time.sleep(0.2)
        assert usage["memory_total_bytes"] == LIMIT
        assert worker["capacity"]["memory_bytes"] == LIMIT
        # The container's own memory (an agent and a sleep), not the host's in use.
        host_used = psutil.virtual_memory().total - psutil.virtual_memory().available
        assert 0 < usage["memory_bytes"] < LIMIT
        assert usage["memory_bytes"] < host_used / 2
        with server.http() as client:
            assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code in (200, 202)
        server.wait_state(job_id, {"cancelled"}, timeout=60)
    finally:
        stop_server(server)
