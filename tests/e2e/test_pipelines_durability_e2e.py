"""Pipeline runs survive a kill -9 of their server and advance once with two servers on one
database: every step's job is created once and runs once, none is forgotten."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from harness import RunningServer, start_server
from test_cluster_e2e import pair
from test_restart_e2e import restart, servers  # noqa: F401 (a fixture)

pytestmark = pytest.mark.e2e

Run = dict[str, Any]


def wide_and_deep(marker: Path, width: int, depth: int, pause: str) -> str:
    """A file whose every step appends its name to `marker` once it has slept `pause`: a
    fan-out of `width` steps after `start`, joined by a chain of `depth` steps."""
    lines = ["name: durable", "steps:", "  start:", f"    run: echo start >> {marker}"]
    for n in range(width):
        lines += [
            f"  fan{n}:",
            "    needs: [start]",
            f"    run: sleep {pause}; echo fan{n} >> {marker}",
        ]
    previous = [f"fan{n}" for n in range(width)]
    for n in range(depth):
        lines += [
            f"  chain{n}:",
            f"    needs: [{', '.join(previous)}]",
            f"    run: echo chain{n} >> {marker}",
        ]
        previous = [f"chain{n}"]
    return "\n".join(lines) + "\n"


def start_run(server: RunningServer, source: str) -> Run:
    with server.http() as client:
        answer = client.post("/api/v1/pipelines", json={"source": source})
    assert answer.status_code == 201, answer.text
    run: Run = answer.json()
    return run


def get_run(server: RunningServer, run_id: str) -> Run:
    with server.http() as client:
        answer = client.get(f"/api/v1/pipelines/{run_id}")
    assert answer.status_code == 200, answer.text
    run: Run = answer.json()
    return run


def wait_run(server: RunningServer, run_id: str, states: set[str], timeout: float) -> Run:
    deadline = time.monotonic() + timeout
    while True:
        run = get_run(server, run_id)
        if run["state"] in states:
            return run
        if time.monotonic() > deadline:
            counts = Counter(step["status"] for step in run["steps"])
            raise AssertionError(f"run {run_id} still {run['state']} after {timeout}s: {counts}")
        time.sleep(0.1)


def step_jobs(server: RunningServer, run_id: str) -> list[str]:
    """Every job the servers created for the run (whatever the run's rows say)."""
    found: list[str] = []
    cursor = None
    with server.http() as client:
        while True:
            params: dict[str, object] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            page = client.get("/api/v1/jobs", params=params).json()
            found += [job["id"] for job in page["items"] if job["id"].startswith(run_id + ".")]
            cursor = page["next"]
            if not cursor:
                return found


def assert_ran_once(run: Run, marker: Path, jobs: list[str]) -> None:
    names = {step["id"] for step in run["steps"]}
    assert run["state"] == "succeeded", run["reason"]
    assert all(step["status"] == "succeeded" for step in run["steps"])
    ran = Counter(marker.read_text().split())
    assert set(ran) == names
    assert [name for name, count in ran.items() if count != 1] == []
    assert sorted(jobs) == sorted(step["job_id"] for step in run["steps"])


def test_a_kill_9_mid_run_ends_with_every_step_run_exactly_once(
    tmp_path: Path,
    servers: list[RunningServer],  # noqa: F811
) -> None:
    home = tmp_path / "home"
    flags = ("--max-workers", "4", "--worker-slots", "4", "--worker-grace", "30s")
    first = start_server(home, *flags)
    servers.append(first)
    marker = tmp_path / "ran.txt"
    run = start_run(first, wide_and_deep(marker, width=24, depth=5, pause="0.4"))
    # Kill it while the fan-out is under way: some steps done, some running, some pending.
    deadline = time.monotonic() + 60
    while marker.exists() is False or len(marker.read_text().split()) < 6:
        assert time.monotonic() < deadline, "the fan-out never got going"
        time.sleep(0.05)
    before = Counter(step["status"] for step in get_run(first, run["id"])["steps"])
    assert before["pending"] > 0 and before["succeeded"] > 0, before
    again = restart(first, home, *flags)
    servers.append(again)
    ended = wait_run(again, run["id"], {"succeeded", "failed", "cancelled"}, 120)
    assert_ran_once(ended, marker, step_jobs(again, run["id"]))


def test_two_servers_on_one_database_advance_a_run_once(
    postgres_dsn: str, server_factory: type, tmp_path: Path
) -> None:
    a, b = pair(server_factory, postgres_dsn, tmp_path, "--max-workers", "3")
    marker = tmp_path / "ran.txt"
    run = start_run(a, wide_and_deep(marker, width=30, depth=4, pause="0.1"))
    ended = wait_run(b, run["id"], {"succeeded", "failed", "cancelled"}, 120)
    assert_ran_once(ended, marker, step_jobs(a, run["id"]))
