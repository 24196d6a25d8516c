"""Two servers on one PostgreSQL database, each with its own local workers, sharing a log
directory: jobs submitted to either run once on either; logs follow through either; when one
server dies the other finishes its jobs."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from harness import RunningServer, stop_server

pytestmark = pytest.mark.e2e

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}


def pair(
    server_factory: type, dsn: str, tmp_path: Path, *extra: str
) -> tuple[RunningServer, RunningServer]:
    logs = tmp_path / "shared-logs"
    common = ("--database-url", dsn, "--log-dir", str(logs), "--worker-slots", "4", *extra)
    a = server_factory.start(*common, home=tmp_path / "a")
    b = server_factory.start(*common, home=tmp_path / "b")
    return a, b


def submit_all(servers: list[RunningServer], bodies: list[dict[str, object]]) -> list[str]:
    """POST every body, alternating between the servers, from a few threads."""
    ids: list[str] = [""] * len(bodies)

    def run(start: int) -> None:
        clients = [s.http() for s in servers]
        try:
            for i in range(start, len(bodies), 8):
                answer = clients[i % len(servers)].post("/api/v1/jobs", json=bodies[i])
                assert answer.status_code == 201, answer.text
                ids[i] = answer.json()["id"]
        finally:
            for c in clients:
                c.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(ids), "some submissions never returned"
    return ids


def wait_all(server: RunningServer, ids: list[str], timeout: float) -> dict[str, dict[str, object]]:
    deadline = time.monotonic() + timeout
    wanted = set(ids)
    with server.http() as client:
        while True:
            jobs: dict[str, dict[str, object]] = {}
            cursor = None
            while True:
                params: dict[str, object] = {"limit": 1000}
                if cursor:
                    params["cursor"] = cursor
                page = client.get("/api/v1/jobs", params=params).json()
                jobs.update((j["id"], j) for j in page["items"] if j["id"] in wanted)
                cursor = page["next"]
                if not cursor:
                    break
            if len(jobs) == len(wanted) and all(j["state"] in TERMINAL for j in jobs.values()):
                return jobs
            if time.monotonic() > deadline:
                waiting = Counter(str(j["state"]) for j in jobs.values())
                raise AssertionError(f"not all jobs ended in {timeout}s: {dict(waiting)}")
            time.sleep(0.2)


def test_1000_jobs_on_two_servers_run_once_each(
    postgres_dsn: str, server_factory: type, tmp_path: Path
) -> None:
    a, b = pair(server_factory, postgres_dsn, tmp_path, "--max-workers", "2")
    ran = tmp_path / "ran"
    ran.mkdir()
    # Each run leaves a file named after its job and attempt: a second run of a job shows.
    body = {"command": f'touch "{ran}/$HODEI_JOB_ID.$HODEI_ATTEMPT.$$"'}
    ids = submit_all([a, b], [dict(body) for _ in range(1000)])
    jobs = wait_all(a, ids, timeout=300)
    assert Counter(str(j["state"]) for j in jobs.values()) == {"succeeded": 1000}
    runs = Counter(p.name.split(".")[0] for p in ran.iterdir())
    assert set(runs) == set(ids) and set(runs.values()) == {1}, "a job ran twice or never"
    assert {j["attempts"] for j in jobs.values()} == {1}
    # Both servers' workers took part.
    with a.http() as ca, b.http() as cb:
        mine_a = {w["id"] for w in ca.get("/api/v1/workers").json()["items"]}
        mine_b = {w["id"] for w in cb.get("/api/v1/workers").json()["items"]}
    used = {str(j["worker_id"]) for j in jobs.values()}
    assert used & mine_a and used & mine_b, (used, mine_a, mine_b)


def test_logs_follow_through_the_server_that_does_not_run_the_job(
    postgres_dsn: str, server_factory: type, tmp_path: Path
) -> None:
    a, b = pair(server_factory, postgres_dsn, tmp_path, "--max-workers", "1")
    script = "for i in $(seq 1 60); do echo line-$i; sleep 0.02; done"
    with a.http() as client:
        job_id = client.post("/api/v1/jobs", json={"command": script}).json()["id"]
    want = "".join(f"line-{i}\n" for i in range(1, 61))
    # Follow on both servers at once: whichever runs it, the other follows it remotely.
    outputs = {}

    def follow(server: RunningServer) -> None:
        out = server.hodei("logs", "-f", job_id, timeout=120)
        outputs[server.url] = (out.returncode, out.stdout.decode(), out.stderr.decode())

    threads = [threading.Thread(target=follow, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    for url, (code, text, err) in outputs.items():
        assert code == 0 and text == want, (url, code, err, text[-200:])
    assert len(outputs) == 2
    # A cancel sent to either server reaches the worker wherever it runs.
    with b.http() as client:
        long = client.post("/api/v1/jobs", json={"command": "sleep 300"}).json()["id"]
    a.wait_state(long, {"running"}, timeout=60)
    for server in (a, b):
        with server.http() as client:
            answer = client.post(f"/api/v1/jobs/{long}/cancel")
            if answer.status_code == 200:
                break
    job = b.wait_state(long, {"cancelled"}, timeout=30)
    assert job["state"] == "cancelled"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the sleep itself is gone from every worker
        if not any("sleep 300" in _cmdline(p) for p in _descendants(a) + _descendants(b)):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the cancelled job's process is still running")


def test_killing_one_server_leaves_its_jobs_to_the_other(
    postgres_dsn: str, server_factory: type, tmp_path: Path
) -> None:
    a, b = pair(
        server_factory, postgres_dsn, tmp_path, "--max-workers", "2", "--worker-grace", "2s"
    )
    body = {"command": "sleep 0.5; echo ok", "max_retries": 2}
    ids = submit_all([a, b], [dict(body) for _ in range(120)])
    deadline = time.monotonic() + 60
    with b.http() as client:  # until B's workers are busy with some of them
        while not any(w["running_jobs"] for w in client.get("/api/v1/workers").json()["items"]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    stop_server(b, signal.SIGKILL)
    jobs = wait_all(a, ids, timeout=240)
    assert Counter(str(j["state"]) for j in jobs.values()) == {"succeeded": 120}
    retried = [j for j in jobs.values() if int(j["attempts"]) > 1]  # type: ignore[call-overload]
    assert retried, "no job of the killed server was taken over"
    with a.http() as client:
        for job in retried[:5]:
            log = client.get(f"/api/v1/jobs/{job['id']}/logs").text
            assert log == "ok\n"


def _descendants(server: RunningServer) -> list[object]:
    import psutil

    try:
        return list(psutil.Process(server.proc.pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def _cmdline(process: object) -> str:
    import psutil

    try:
        return " ".join(process.cmdline())  # type: ignore[attr-defined]
    except psutil.Error:
        return ""


def test_a_token_revoked_on_one_server_is_refused_by_the_other_at_once(
    postgres_dsn: str, server_factory: type, tmp_path: Path
) -> None:
    a, b = pair(server_factory, postgres_dsn, tmp_path, "--max-workers", "0")
    with a.http() as ca, b.http(authenticated=False) as cb:
        made = ca.post("/api/v1/tokens", json={"role": "viewer", "name": "ci"}).json()
        bearer = {"Authorization": f"Bearer {made['token']}"}
        assert cb.get("/api/v1/jobs", headers=bearer).status_code == 200  # b caches it now
        assert ca.post(f"/api/v1/tokens/{made['id']}/revoke").status_code == 200
        revoked = time.monotonic()
        while cb.get("/api/v1/jobs", headers=bearer).status_code == 200:
            # b's cache would trust the token for 5 s: only the cluster's message ends it sooner.
            assert time.monotonic() - revoked < 3, "b still takes the revoked token"
            time.sleep(0.02)
        refused = cb.get("/api/v1/jobs", headers=bearer)
        assert refused.status_code == 401 and "revoked" in refused.text
