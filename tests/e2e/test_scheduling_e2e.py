"""Scheduling as a user sees it: labels, priorities under contention, unschedulable jobs."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

import pytest
from harness import RunningServer

pytestmark = pytest.mark.e2e


def agent(server: RunningServer, slots: int, **labels: str) -> subprocess.Popen[bytes]:
    flags = [x for k, v in labels.items() for x in ("--label", f"{k}={v}")]
    otp = server.hodei("worker-otp").stdout.decode().strip()
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hodei",
            "agent",
            "--server",
            server.grpc,
            "--slots",
            str(slots),
            *flags,
        ],
        env={**server.env(), "HODEI_TOKEN": otp},
        stdin=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_200_mixed_jobs_each_on_a_fitting_worker_high_priority_first(
    server_factory: type,
) -> None:
    server = server_factory.start("--max-workers", "0")
    rng = random.Random(7)
    kinds = [{"pool": "b"}, {"pool": "a"}, {"gpu": "yes"}, {}]
    jobs: dict[str, dict[str, object]] = {}
    with server.http() as client:
        for i in range(200):
            body = {"command": "true", "labels": kinds[i % 4], "priority": rng.randint(0, 9)}
            job = client.post("/api/v1/jobs", json=body).json()
            jobs[job["id"]] = body
    agents = [
        agent(server, 3, pool="a"),
        agent(server, 2, pool="b"),
        agent(server, 1, pool="a", gpu="yes"),
    ]
    try:
        deadline = time.monotonic() + 120
        with server.http() as client:
            while True:
                done = client.get("/api/v1/jobs?state=succeeded&limit=1000").json()["items"]
                if len(done) == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert len(done) == 200
            workers = {w["id"]: w["labels"] for w in client.get("/api/v1/workers").json()["items"]}
    finally:
        for a in agents:
            a.terminate()
            a.wait(30)
    by_id = {j["id"]: j for j in done}
    for job_id, body in jobs.items():
        offered = workers[by_id[job_id]["worker_id"]]
        assert all(offered.get(k) == v for k, v in body["labels"].items())  # type: ignore[union-attr]
    free = [by_id[j] for j, body in jobs.items() if not body["labels"]]
    high = [j["started_at"] for j in free if j["priority"] >= 8]
    low = [j["started_at"] for j in free if j["priority"] <= 1]
    assert high and low and max(high) < min(low)


def test_a_job_no_worker_can_ever_take_is_reported_unschedulable(server: RunningServer) -> None:
    big = server.hodei("submit", "--memory", "100T", "--", "true").stdout.decode().strip()
    odd = server.hodei("submit", "--label", "arch=sparc", "--", "true").stdout.decode().strip()
    for job_id, why in ((big, "MiB memory"), (odd, "arch=sparc")):
        deadline = time.monotonic() + 10
        while True:
            shown = json.loads(server.hodei("show", job_id, "-o", "json").stdout)
            if shown["reason"].startswith("unschedulable:") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert shown["state"] == "queued"
        assert shown["reason"].startswith("unschedulable:") and why in shown["reason"]
    ok = server.hodei("submit", "-f", "--", "echo", "fine")  # the queue is not blocked by them
    assert ok.returncode == 0 and ok.stdout == b"fine\n"
