"""What a dashboard (or a script) reads over REST, against a real server: byte ranges of a log
and its line index, filtered job lists, the live job feed (SSE) and the workers view."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import RunningServer
from proxy import CuttableProxy
from test_resilience import static_agent, stop

from hodei.cli_client import SSEEvent, SSEParser

pytestmark = pytest.mark.e2e

LINES = 400_000  # `seq` prints 2.7 MB: several index blocks, and a body sent in pieces


def finished(server: RunningServer, job_id: str) -> dict[str, Any]:
    return server.wait_state(job_id, {"succeeded", "failed", "cancelled"}, timeout=60)


def submit(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/jobs", json={"command": "true", **body})
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


# -- log byte ranges and the line index


def test_log_byte_ranges(server: RunningServer) -> None:
    with server.http() as client:
        job = submit(client, command="seq", arguments=["1", str(LINES)])
        finished(server, job["id"])
        log = "".join(f"{n}\n" for n in range(1, LINES + 1)).encode()
        total = len(log)
        url = f"/api/v1/jobs/{job['id']}/logs"

        whole = client.get(url)
        assert whole.status_code == 200 and whole.content == log
        assert whole.headers["x-log-size"] == str(total)
        assert whole.headers["accept-ranges"] == "bytes"
        assert whole.headers["x-log-attempt"] == "1"
        assert "content-range" not in whole.headers

        def ranged(spec: str) -> httpx.Response:
            return client.get(url, headers={"Range": spec})

        for spec, first, last in [
            ("bytes=0-9", 0, 9),
            ("bytes=100-", 100, total - 1),
            ("bytes=-5", total - 5, total - 1),
            (f"bytes=-{total * 2}", 0, total - 1),
            (f"bytes={total - 3}-{total * 5}", total - 3, total - 1),
            ("bytes=70000-200000", 70000, 200000),
        ]:
            answer = ranged(spec)
            assert answer.status_code == 206, (spec, answer.text)
            assert answer.headers["content-range"] == f"bytes {first}-{last}/{total}", spec
            assert answer.content == log[first : last + 1], spec
            assert answer.headers["x-log-size"] == str(total)
        for spec in (f"bytes={total}-", f"bytes={total + 10}-{total + 20}", "bytes=-0"):
            refused = ranged(spec)
            assert refused.status_code == 416, spec
            assert refused.headers["content-range"] == f"bytes */{total}"
            assert refused.json()["error"]["code"] == "range_not_satisfiable"
        for spec in ("bytes=5-2", "bytes=0-1,4-5", "bytes=x-", "bytes=-", "nonsense"):
            assert ranged(spec).status_code == 400, spec
        assert ranged("lines=0-5").content == log  # another unit: ignored

        part = client.get(url, params={"offset": 10, "limit": 25})
        assert part.status_code == 200 and part.content == log[10:35]
        assert part.headers["x-log-size"] == str(total)
        assert client.get(url, params={"offset": total + 5}).content == b""
        assert client.get(url, params={"limit": 0}).content == b""
        both = client.get(url, params={"offset": 1}, headers={"Range": "bytes=0-1"})
        assert both.status_code == 400
        assert client.get(url, params={"attempt": 2}).status_code == 400
        assert (
            client.get("/api/v1/jobs/nope/logs", headers={"Range": "bytes=0-1"}).status_code == 404
        )


def test_an_empty_log_has_no_byte_to_range(server: RunningServer) -> None:
    with server.http() as client:
        job = submit(client)
        finished(server, job["id"])
        url = f"/api/v1/jobs/{job['id']}/logs"
        assert client.get(url).headers["x-log-size"] == "0"
        refused = client.get(url, headers={"Range": "bytes=-10"})
        assert refused.status_code == 416 and refused.headers["content-range"] == "bytes */0"
        index = client.get(f"{url}/index").json()
        assert index == {"attempt": 1, "size": 0, "lines": 0, "block": 65536, "starts": []}


def test_line_index_jumps_to_any_line(server: RunningServer) -> None:
    with server.http() as client:
        job = submit(client, command="seq", arguments=["1", str(LINES)])
        finished(server, job["id"])
        url = f"/api/v1/jobs/{job['id']}/logs"
        index = client.get(f"{url}/index", params={"attempt": 1}).json()
        total = int(client.get(url, headers={"Range": "bytes=0-0"}).headers["x-log-size"])
        assert index["size"] == total and index["lines"] == LINES and index["block"] == 65536
        starts = index["starts"]
        assert len(starts) == -(-total // 65536) and starts[0] == [0, 0]
        for block, (offset, line) in enumerate(starts):
            assert offset >= 65536 * block and (line == 0 or 65536 * block > 0)
        for wanted in (0, 1, 12345, 250_000, LINES - 1):  # line L of `seq` says L + 1
            offset, line = max((s for s in starts if s[1] <= wanted), key=lambda s: s[1])
            block = client.get(url, headers={"Range": f"bytes={offset}-{offset + 65535 + 16}"})
            text = block.content.split(b"\n")[wanted - line]
            assert text == str(wanted + 1).encode(), wanted
        assert client.get(f"{url}/index").json() == index  # cached, the same
        assert client.get("/api/v1/jobs/nope/logs/index").status_code == 404


def test_the_index_of_a_growing_log_grows(server: RunningServer) -> None:
    script = "for i in $(seq 1 30); do echo line-$i; sleep 0.1; done"
    with server.http() as client:
        job = submit(client, command="bash", arguments=["-c", script])
        url = f"/api/v1/jobs/{job['id']}/logs/index"
        seen = []
        while (state := client.get(f"/api/v1/jobs/{job['id']}").json()["state"]) != "succeeded":
            assert state in ("queued", "assigned", "running"), state
            seen.append(client.get(url).json()["lines"])
            time.sleep(0.2)
        final = client.get(url).json()
        assert final["lines"] == 30 and final["starts"] == [[0, 0]]
        assert seen == sorted(seen) and len(set(seen)) > 2  # it followed the log


# -- job list filters


def ids(client: httpx.Client, **params: Any) -> list[str]:
    response = client.get("/api/v1/jobs", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["items"]]


def test_list_filters(server: RunningServer) -> None:
    # Labels also place jobs: no local worker has these, so the labelled ones stay queued.
    batch = [
        {"command": "true", "name": "Nightly build", "labels": {"team": "infra", "env": "prod"}},
        {"command": "true", "name": "docs build", "labels": {"team": "infra", "env": "dev"}},
        {"command": "false", "name": "deploy"},
    ]
    with server.http() as client:
        answer = client.post("/api/v1/jobs/batch", json={"jobs": batch})
        a, b, c = (item["id"] for item in answer.json()["items"])
        finished(server, c)
        assert ids(client, name="BUILD") == [b, a]
        assert ids(client, label="team=infra") == [b, a]
        assert ids(client, label=["team=infra", "env=prod"]) == [a]
        assert ids(client, label="env=prod", state="queued", name="nightly") == [a]
        assert ids(client, name="deploy", state="failed") == [c]
        assert ids(client, name="build", state="failed") == []
        page = client.get("/api/v1/jobs", params={"label": "team=infra", "limit": 1}).json()
        assert [j["id"] for j in page["items"]] == [b] and page["next"]
        rest = ids(client, label="team=infra", cursor=page["next"])
        assert rest == [a]
        for bad in (
            {"label": "noequals"},
            {"label": "bad key=x"},
            {"label": ["k=1", "k=2"]},
            {"pipeline": "not-a-run"},
            {"state": "nope"},
            {"name": "x" * 201},
        ):
            response = client.get("/api/v1/jobs", params=bad)
            assert response.status_code == 400, bad
            assert response.json()["error"]["code"] == "invalid_request"


def test_list_the_jobs_of_a_pipeline_run(server: RunningServer) -> None:
    source = (
        "name: two\nsteps:\n  one:\n    run: echo 1\n  two:\n    needs: [one]\n    run: echo 2\n"
    )
    with server.http() as client:
        submit(client, name="not a step")
        run = client.post("/api/v1/pipelines", json={"source": source}).json()
        deadline = time.monotonic() + 60
        while client.get(f"/api/v1/pipelines/{run['id']}").json()["state"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        jobs = ids(client, pipeline=run["id"])
        assert len(jobs) == 2 and all(j.startswith(f"{run['id']}.") for j in jobs)
        assert ids(client, pipeline=run["id"], name="nothing") == []
        assert ids(client, pipeline="r" + "0" * 17) == []


# -- the live job feed


@contextmanager
def job_events(server: RunningServer, **params: Any) -> Iterator[queue.Queue[SSEEvent]]:
    """The events of GET /api/v1/jobs/events, read in a thread, once it says `ready`."""
    events: queue.Queue[SSEEvent] = queue.Queue()
    done = threading.Event()
    failed: list[BaseException] = []
    client = server.http()

    def read() -> None:
        parser = SSEParser()
        try:
            with client.stream("GET", "/api/v1/jobs/events", params=params, timeout=60) as answer:
                assert answer.status_code == 200
                assert answer.headers["content-type"].startswith("text/event-stream")
                for chunk in answer.iter_bytes():
                    for event in parser.feed(chunk):
                        events.put(event)
        except Exception as exc:  # the stream closed under it at the end is no failure
            if not done.is_set():
                failed.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        first = events.get(timeout=10)
        assert first.event == "ready"
        yield events
    finally:
        done.set()
        client.close()
        # A read blocked in the socket may not notice at once: it ends when the server stops.
        reader.join(1)
    assert not failed, failed


def jobs_until(
    events: queue.Queue[SSEEvent], done: Any, timeout: float = 60
) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not done(seen):
        event = events.get(timeout=max(0.1, deadline - time.monotonic()))
        assert event.event == "job", event
        seen.append(json.loads(event.data))
    return seen


def test_the_job_feed_tells_every_change(server: RunningServer) -> None:
    with job_events(server) as events, server.http() as client:
        job = submit(client, command="echo", arguments=["hi"], name="fed")
        seen = jobs_until(events, lambda s: s and s[-1]["state"] == "succeeded")
    assert {j["id"] for j in seen} == {job["id"]}
    assert seen[0]["state"] == "queued" and seen[-1]["exit_code"] == 0
    states = [j["state"] for j in seen]
    assert states == sorted(states, key=["queued", "assigned", "running", "succeeded"].index)
    shown = client_view(server, job["id"])
    assert seen[-1] == shown  # as GET /api/v1/jobs/{id} shows it


def client_view(server: RunningServer, job_id: str) -> dict[str, Any]:
    with server.http() as client:
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}").json()
    job.pop("attempt_history")
    return job


def test_the_job_feed_filters_on_the_server(server: RunningServer) -> None:
    with (
        job_events(server, label="team=infra") as infra,
        job_events(server, state="queued", name="WAIT") as queued,
        server.http() as client,
    ):
        other = submit(client, name="not this one")
        mine = submit(client, labels={"team": "infra"})  # no worker has it: it waits
        waiting = submit(client, name="wait, then run")
        finished(server, other["id"])
        finished(server, waiting["id"])
        client.post(f"/api/v1/jobs/{mine['id']}/cancel")
        got = jobs_until(infra, lambda s: s and s[-1]["state"] == "cancelled")
        assert [j["id"] for j in got] == [mine["id"]] * len(got)
        assert [j["state"] for j in got] == ["queued", "cancelled"]
        # Queued when it matched, then once more as it left the state: the client drops it.
        left = jobs_until(queued, lambda s: s and s[-1]["state"] != "queued")
        assert [j["id"] for j in left] == [waiting["id"]] * len(left)
        assert left[0]["state"] == "queued" and left[-1]["state"] == "assigned"
        assert queued.empty()  # nothing of its later states, nor of the other jobs
        assert client.get("/api/v1/jobs/events", params={"label": "bad"}).status_code == 400


def test_the_job_feed_keeps_up_with_a_batch_and_shows_why_jobs_wait(
    server_factory: type,
) -> None:
    server = server_factory.start("--max-workers", "0")  # nothing runs: every job waits
    with job_events(server) as events, server.http() as client:
        batch = [{"command": "true", "name": f"b{n}"} for n in range(300)]
        assert client.post("/api/v1/jobs/batch", json={"jobs": batch}).status_code == 201
        seen = jobs_until(events, lambda s: len(s) >= 300)
    assert len({j["id"] for j in seen}) == 300 and all(j["state"] == "queued" for j in seen)
    shown = client_view(server, seen[0]["id"])
    assert shown["reason"]  # the live "why pending"
    assert seen[0]["id"] == shown["id"]


def test_the_job_feed_tells_changes_made_on_another_server(
    postgres_dsn: str, server_factory: type, tmp_path: Path
) -> None:
    common = ("--database-url", postgres_dsn, "--max-workers", "0")
    a = server_factory.start(*common, home=tmp_path / "a")
    b = server_factory.start(*common, home=tmp_path / "b")
    with job_events(b, name="elsewhere") as events, a.http() as client:
        job = submit(client, name="made elsewhere")
        submit(client, name="not this one")
        client.post(f"/api/v1/jobs/{job['id']}/cancel")
        seen = jobs_until(events, lambda s: s and s[-1]["state"] == "cancelled")
    assert {j["id"] for j in seen} == {job["id"]} and seen[0]["state"] == "queued"


# -- the workers view


def test_workers_view_and_a_reconnecting_worker(server_factory: type) -> None:
    server = server_factory.start("--max-workers", "0", "--worker-grace", "30s")
    host, port = server.grpc.rsplit(":", 1)
    with CuttableProxy(host, int(port)) as proxy, server.http() as client:
        agent = static_agent(server, f"127.0.0.1:{proxy.port}", slots=3)
        try:
            job = submit(client, command="sleep", arguments=["30"], cpu=0.5)
            server.wait_state(job["id"], {"running"})
            (worker,) = client.get("/api/v1/workers").json()["items"]
            assert worker["state"] == "busy" and worker["accepting"] is True
            assert worker["running_jobs"] == [job["id"]]
            assert worker["provider"] == "static" and worker["capacity"]["slots"] == 3
            assert worker["capacity"]["cpus"] > 0 and worker["capacity"]["memory_bytes"] > 0
            assert worker["reserved"] == {"cpus": 0.5, "memory_bytes": 0, "slots": 1}
            assert set(worker["usage"]) == {"cpu_percent", "memory_bytes", "memory_total_bytes"}
            assert worker["last_heartbeat"] and worker["disconnected_at"] is None
            proxy.cut()
            deadline = time.monotonic() + 20
            while (worker := client.get("/api/v1/workers").json()["items"][0])["state"] != (
                "reconnecting"
            ):
                assert time.monotonic() < deadline, worker
                time.sleep(0.1)
            assert worker["disconnected_at"] and worker["reconnect_by"] > worker["disconnected_at"]
            assert worker["running_jobs"] == [job["id"]]  # kept for it meanwhile
            proxy.restore()
            while (worker := client.get("/api/v1/workers").json()["items"][0])["state"] != "busy":
                assert time.monotonic() < deadline + 30, worker
                time.sleep(0.1)
            assert worker["disconnected_at"] is None and worker["reconnect_by"] is None
            client.post(f"/api/v1/jobs/{job['id']}/cancel")
        finally:
            stop(agent)
