"""The working core, tried as a user would: CLI against a real server with local workers."""

from __future__ import annotations

import json
import signal
import time
import uuid

import httpx
import psutil
import pytest
from harness import RunningServer, stop_server

pytestmark = pytest.mark.e2e


def submit(server: RunningServer, *args: str) -> str:
    out = server.hodei("submit", *args)
    assert out.returncode == 0, out.stderr.decode()
    job_id = out.stdout.decode().strip()
    assert job_id and "\n" not in job_id
    return job_id


def test_submit_follow_prints_output_and_exits_with_the_job_code(server: RunningServer) -> None:
    out = server.hodei("submit", "-f", "--", "sh", "-c", "echo hello; exit 3")
    assert out.returncode == 3, out.stderr.decode()
    assert out.stdout.decode().splitlines()[0] == "hello"


def test_jobs_show_workers_json(server: RunningServer) -> None:
    job_id = submit(server, "--name", "json-check", "--priority", "5", "--", "echo", "hi")
    job = server.wait_state(job_id, {"succeeded"})
    shown = json.loads(server.hodei("show", job_id, "-o", "json").stdout)
    for key in (
        "id",
        "name",
        "state",
        "exit_code",
        "attempts",
        "labels",
        "priority",
        "worker_id",
        "created_at",
        "started_at",
        "finished_at",
    ):
        assert key in shown
    assert shown["name"] == "json-check" and shown["priority"] == 5
    assert shown["exit_code"] == 0 and shown["attempts"] == 1 and job["worker_id"]
    listed = json.loads(server.hodei("jobs", "-o", "json").stdout)
    assert set(listed) == {"items", "next"}
    assert job_id in [j["id"] for j in listed["items"]]
    other = submit(server, "--name", "other", "--", "true")
    named = json.loads(server.hodei("jobs", "--name", "JSON-C", "-o", "json").stdout)
    assert [j["id"] for j in named["items"]] == [job_id] and other != job_id
    workers = json.loads(server.hodei("workers", "-o", "json").stdout)
    assert workers["items"] and workers["items"][0]["provider"] == "local"
    assert server.hodei("logs", job_id).stdout == b"hi\n"


def test_secret_is_delivered_as_env_and_masked(server: RunningServer) -> None:
    secret = "s3cr3t-" + uuid.uuid4().hex
    assert server.hodei("secret", "set", "API_KEY", input=secret.encode() + b"\n").returncode == 0
    script = (
        'echo "plain:$API_KEY"; printf "split:%s" "${API_KEY:0:9}"; sleep 0.3; '
        'printf "%s\\n" "${API_KEY:9}"; [ -n "$API_KEY" ]'
    )
    out = server.hodei("submit", "-f", "--secret", "API_KEY", "--", "bash", "-c", script)
    assert out.returncode == 0, out.stderr.decode()
    text = out.stdout.decode()
    assert "plain:***" in text and "split:***" in text
    job_id = json.loads(server.hodei("jobs", "-o", "json").stdout)["items"][0]["id"]
    stored = server.hodei("logs", job_id).stdout.decode()
    record = server.hodei("show", job_id, "-o", "json").stdout.decode()
    for seen in (text, stored, record):
        assert secret not in seen
    assert secret[:9] not in stored
    assert "API_KEY" in server.hodei("secret", "list").stdout.decode()


def test_unknown_secret_is_refused(server: RunningServer) -> None:
    out = server.hodei("submit", "--secret", "NOPE", "--", "true")
    assert out.returncode == 1 and b"unknown secret" in out.stderr


def test_cancel_kills_the_whole_process_group(server: RunningServer) -> None:
    marker = uuid.uuid4().hex
    job_id = submit(server, "--", "sh", "-c", f"sleep 300 & sleep 300; : {marker}")
    server.wait_state(job_id, {"running"})
    deadline = time.monotonic() + 10
    victims: list[psutil.Process] = []
    while not victims and time.monotonic() < deadline:
        victims = [
            p
            for p in psutil.process_iter(["cmdline"])
            if marker in " ".join(p.info["cmdline"] or [])
        ]
        time.sleep(0.05)
    assert victims
    family = [c for v in victims for c in v.children(recursive=True)] + victims
    t0 = time.monotonic()
    out = server.hodei("cancel", job_id)
    assert out.returncode == 0, out.stderr.decode()
    job = server.wait_state(job_id, {"cancelled", "failed", "succeeded"}, timeout=15)
    assert job["state"] == "cancelled" and time.monotonic() - t0 < 10
    _, alive = psutil.wait_procs(family, timeout=5)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    again = server.hodei("cancel", job_id)
    assert again.returncode == 1 and b"already ended" in again.stderr


def test_cancel_a_queued_job_and_retry_it(server_factory: type) -> None:
    server = server_factory.start("--max-workers", "0")  # nothing can run
    job_id = submit(server, "--", "echo", "later")
    shown = json.loads(server.hodei("show", job_id, "-o", "json").stdout)
    assert shown["state"] == "queued"
    assert shown["reason"] == (
        "unschedulable: no worker connected; provider: provisioning is off (max workers 0)"
    )
    assert server.hodei("cancel", job_id).returncode == 0
    assert server.wait_state(job_id, {"cancelled"})["exit_code"] is None
    assert server.hodei("retry", job_id).returncode == 0
    assert server.wait_state(job_id, {"queued"})["state"] == "queued"


def test_restart_keeps_jobs_and_logs(server_factory: type, tmp_path) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "persist"
    first = server_factory.start(home=home)
    ids = [submit(first, "--", "sh", "-c", f"echo job-{i}; exit {i}") for i in range(4)]
    for job_id in ids:
        first.wait_state(job_id, {"succeeded", "failed"})
    stop_server(first, signal.SIGKILL)
    second = server_factory.start(home=home)
    listed = json.loads(second.hodei("jobs", "-o", "json").stdout)["items"]
    assert {j["id"] for j in listed} >= set(ids)
    for i, job_id in enumerate(ids):
        assert second.hodei("logs", job_id).stdout == f"job-{i}\n".encode()
        assert json.loads(second.hodei("show", job_id, "-o", "json").stdout)["exit_code"] == i


def read_sse(client: httpx.Client, url: str, headers: dict[str, str], stop_after: int | None):
    """Return ([(id, event, data)], complete) reading at most `stop_after` log events."""
    events = []
    with client.stream("GET", url, headers=headers) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        for line in resp.iter_lines():
            if line:
                key, _, value = line.partition(": ")
                fields[key] = value
                continue
            events.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
            fields = {}
            if events[-1][1] == "end":
                return events, True
            if stop_after is not None and len(events) >= stop_after:
                return events, False
    return events, False


def test_sse_resumes_from_last_event_id_without_loss_or_repetition(server: RunningServer) -> None:
    job_id = submit(
        server, "--", "bash", "-c", "for i in $(seq 1 60); do echo line-$i; sleep 0.02; done"
    )
    url = f"/api/v1/jobs/{job_id}/logs/stream"
    with server.http() as client:
        first, done = read_sse(client, url, {}, stop_after=3)
        assert not done
        last_id = first[-1][0]
        rest, done = read_sse(client, url, {"Last-Event-ID": str(last_id)}, stop_after=None)
        assert done and rest[-1][2]["state"] == "succeeded" and rest[-1][2]["exit_code"] == 0
        text = "".join(d for _, e, d in first + rest if e == "log")
        assert text == "".join(f"line-{i}\n" for i in range(1, 61))
        ids = [i for i, e, _ in first + rest if e == "log"]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert ids[-1] == len(text.encode())
        bad = client.get(url, headers={"Last-Event-ID": "x"})
        assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["error"]["message"]


def test_bad_input_gets_clear_errors(server: RunningServer) -> None:
    missing = server.hodei("show", "nope")
    assert missing.returncode == 1 and b"no job nope" in missing.stderr
    assert b"Traceback" not in missing.stderr
    with server.http() as client:
        r = client.post("/api/v1/jobs", content=b"{not json")
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
        r = client.post("/api/v1/jobs", json={"command": "echo", "bogus": 1})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
        # One status and code for every kind of bad input, and no large input echoed back.
        huge = "K" * 100_000
        for body in (
            {"command": "echo", "env": {huge: "v"}},
            {"command": "echo", "secrets": [huge]},
            {"command": "echo", huge: 1},
        ):
            r = client.post("/api/v1/jobs", json=body)
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
            assert len(r.content) < 4096, r.content[:200]
        surrogate = b'{"command": "echo \\udcff"}'
        r = client.post(
            "/api/v1/jobs", content=surrogate, headers={"content-type": "application/json"}
        )
        assert r.status_code == 400 and "unicode" in r.json()["error"]["message"].lower(), r.text
        for method in ("PUT", "DELETE"):
            r = client.request(method, "/api/v1/secrets/a%2Fb", json={"value": "long enough"})
            assert r.status_code == 400, (method, r.text)
            assert "invalid secret name" in r.json()["error"]["message"]
        r = client.post("/api/v1/jobs", json={"command": "echo", "env": {"1X": "y"}})
        assert r.status_code == 400 and "invalid env key" in r.json()["error"]["message"]
        assert client.get("/api/v1/jobs?state=weird").status_code == 400
        assert client.get("/api/v1/jobs/nope/logs").status_code == 404
        assert client.get("/healthz").json()["status"] == "ok"
        assert b"hodei_jobs_submitted_total" in client.get("/metrics").content
    bad_flag = server.hodei("submit", "--label", "novalue", "--", "true")
    assert bad_flag.returncode == 2 and b"Traceback" not in bad_flag.stderr


def test_forged_worker_token_is_refused(server: RunningServer) -> None:
    out = server.hodei("agent", "--server", server.grpc, "--token", "hwp_forged", timeout=30)
    assert out.returncode == 3
    assert b"Traceback" not in out.stderr


def test_static_agent_with_labels_takes_labelled_jobs(server: RunningServer) -> None:
    otp = server.hodei("worker-otp", "--label", "pool=gpu").stdout.decode().strip()
    import subprocess
    import sys

    agent = subprocess.Popen(
        [sys.executable, "-m", "hodei", "agent", "--server", server.grpc],
        env={**server.env(), "HODEI_TOKEN": otp},
        stderr=subprocess.DEVNULL,
    )
    try:
        job_id = submit(server, "--label", "pool=gpu", "--", "echo", "on-gpu")
        job = server.wait_state(job_id, {"succeeded"})
        assert str(job["worker_id"]).startswith("static-")
        replay = server.hodei("agent", "--server", server.grpc, "--token", otp, timeout=30)
        assert replay.returncode == 3  # the OTP was single-use
    finally:
        agent.terminate()
        agent.wait(10)


def test_priority_orders_the_queue(server_factory: type) -> None:
    server = server_factory.start("--max-workers", "1")
    blocker = submit(server, "--", "sleep", "2")
    server.wait_state(blocker, {"running"})
    with server.http() as client:

        def post(priority: int) -> str:
            body = {"command": "true", "priority": priority}
            return str(client.post("/api/v1/jobs", json=body).json()["id"])

        low = [post(0) for _ in range(3)]
        high = post(10)
        assert client.get(f"/api/v1/jobs/{blocker}").json()["state"] == "running"
        for job_id in [*low, high]:
            server.wait_state(job_id, {"succeeded"})
        started = {j: client.get(f"/api/v1/jobs/{j}").json()["started_at"] for j in [*low, high]}
    assert started[high] < min(started[j] for j in low)


def test_workers_are_provisioned_on_demand_and_none_outlive_the_server(
    server_factory: type,
) -> None:
    server = server_factory.start("--max-workers", "2", "--worker-idle", "1s")
    ids = [submit(server, "--", "sleep", "0.5") for _ in range(4)]
    for job_id in ids:
        server.wait_state(job_id, {"succeeded"})
    with server.http() as client:
        workers = {j: client.get(f"/api/v1/jobs/{j}").json()["worker_id"] for j in ids}
    assert 1 <= len(set(workers.values())) <= 2
    deadline = time.monotonic() + 15
    while server.agent_pids() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not server.agent_pids()  # idle workers were stopped
    submit(server, "--", "sleep", "30")
    deadline = time.monotonic() + 15
    while not server.agent_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    agents = [psutil.Process(p) for p in server.agent_pids()]
    assert agents
    stop_server(server, signal.SIGKILL)
    _, alive = psutil.wait_procs(agents, timeout=10)
    assert not alive  # agents die with the server, even after kill -9


def test_workers_report_usage_in_heartbeats(server_factory: type) -> None:
    server = server_factory.start("--heartbeat-interval", "100ms")
    job_id = submit(server, "--", "sleep", "1")
    server.wait_state(job_id, {"running"})
    deadline = time.monotonic() + 10
    with server.http() as client:
        while time.monotonic() < deadline:
            (worker,) = client.get("/api/v1/workers").json()["items"]
            if worker["usage"]["memory_bytes"] > 0:
                break
            time.sleep(0.05)
    assert worker["usage"]["memory_bytes"] > 0 and worker["running_jobs"] == [job_id]
    assert worker["capacity"]["slots"] == 1 and worker["capacity"]["cpus"] > 0


def test_timeout_ends_the_job_timed_out_and_kills_it(server: RunningServer) -> None:
    t0 = time.monotonic()
    out = server.hodei("submit", "-f", "--timeout", "2s", "--", "sleep", "60")
    assert out.returncode != 0 and time.monotonic() - t0 < 20
    job = json.loads(server.hodei("jobs", "-o", "json").stdout)["items"][0]
    assert job["state"] == "timed_out" and "timed out" in job["reason"]


def test_retries_with_backoff_record_each_attempt(server_factory: type, tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = server_factory.start("--retry-backoff", "200ms")
    marker = tmp_path / "tries"
    # Attempt 1 exits 3, attempt 2 exits 4, attempt 3 succeeds.
    script = (
        f"echo try-$HODEI_ATTEMPT; echo x >> {marker}; n=$(wc -l < {marker}); "
        '[ "$n" -ge 3 ] && exit 0; exit $((n + 2))'
    )
    job_id = submit(server, "--retries", "3", "--", "bash", "-c", script)
    job = server.wait_state(job_id, {"succeeded", "failed"}, timeout=60)
    assert job["state"] == "succeeded" and job["attempts"] == 3
    with server.http() as client:
        for n in (1, 2, 3):
            log = client.get(f"/api/v1/jobs/{job_id}/logs?attempt={n}").text
            assert log == f"try-{n}\n"
        assert client.get(f"/api/v1/jobs/{job_id}/logs?attempt=4").status_code == 400
        history = client.get(f"/api/v1/jobs/{job_id}").json()["attempt_history"]
        listed = client.get(f"/api/v1/jobs/{job_id}/attempts").json()["items"]
    assert listed == history
    assert [(a["number"], a["state"], a["exit_code"]) for a in history] == [
        (1, "failed", 3),
        (2, "failed", 4),
        (3, "succeeded", 0),
    ]
    for attempt in history:
        assert attempt["worker_id"] and attempt["assigned_at"]
        assert attempt["started_at"] <= attempt["finished_at"]
    shown = server.hodei("show", job_id)
    assert shown.returncode == 0, shown.stderr.decode()
    lines = shown.stdout.decode().splitlines()
    table = lines[lines.index("attempts:") + 1 :]
    assert table[0].split()[:3] == ["ATTEMPT", "STATE", "EXIT"]
    assert [row.split()[:3] for row in table[1:4]] == [
        ["1", "failed", "3"],
        ["2", "failed", "4"],
        ["3", "succeeded", "0"],
    ]


def test_idempotency_key_makes_a_repeated_submit_return_the_same_job(
    server: RunningServer,
) -> None:
    first = submit(server, "--idempotency-key", "release-7", "--", "echo", "once")
    again = submit(server, "--idempotency-key", "release-7", "--", "echo", "once")
    assert again == first
    other = server.hodei("submit", "--idempotency-key", "release-7", "--", "echo", "twice")
    assert other.returncode != 0
    assert f"idempotency key already used by job {first}" in other.stderr.decode()
    bad = server.hodei("submit", "--idempotency-key", "has space", "--", "true")
    assert bad.returncode != 0 and "idempotency key" in bad.stderr.decode()
    body = {"command": "echo via-rest"}
    with server.http() as client:
        created = client.post("/api/v1/jobs", json=body, headers={"Idempotency-Key": "rest-1"})
        repeated = client.post("/api/v1/jobs", json=body, headers={"Idempotency-Key": "rest-1"})
        assert (created.status_code, repeated.status_code) == (201, 200)
        assert created.json()["id"] == repeated.json()["id"]
        assert created.json()["idempotency_key"] == "rest-1"
        listed = client.get("/api/v1/jobs", params={"limit": 1000}).json()["items"]
    assert sum(1 for j in listed if j["idempotency_key"] == "release-7") == 1
    assert sum(1 for j in listed if j["idempotency_key"] == "rest-1") == 1


def test_a_batch_submit_stores_every_job_or_refuses_the_whole_batch(server: RunningServer) -> None:
    jobs = [{"command": f"echo batch-{i}"} for i in range(50)]
    jobs.append({"command": "echo keyed", "idempotency_key": "batch-key"})
    with server.http() as client:
        answer = client.post("/api/v1/jobs/batch", json={"jobs": jobs})
        assert answer.status_code == 201, answer.text
        items = answer.json()["items"]
        assert len(items) == 51 and all(item["created"] for item in items)
        again = client.post("/api/v1/jobs/batch", json={"jobs": jobs[-1:]}).json()["items"]
        assert again[0]["id"] == items[-1]["id"] and not again[0]["created"]
        changed = {"command": "echo other", "idempotency_key": "batch-key"}
        mixed = client.post("/api/v1/jobs/batch", json={"jobs": [changed, jobs[0]]}).json()
        assert mixed["items"][0]["error"]["code"] == "conflict"
        assert mixed["items"][1]["created"]
        twice = [{"command": "echo t", "idempotency_key": "twice"}] * 2
        twice.append({"command": "echo u", "idempotency_key": "twice"})
        same = client.post("/api/v1/jobs/batch", json={"jobs": twice}).json()["items"]
        assert same[0]["created"] and not same[1]["created"] and same[0]["id"] == same[1]["id"]
        assert same[2]["error"]["code"] == "conflict"
        bad = [*jobs[:3], {"command": "x", "env": {"1BAD": "v"}}]
        refused = client.post("/api/v1/jobs/batch", json={"jobs": bad})
        assert refused.status_code == 400 and "jobs[3]" in refused.json()["error"]["message"]
        named = client.post("/api/v1/jobs/batch", json={"jobs": [{"command": "x", "id": "n1"}]})
        assert named.status_code == 400
        too_many = client.post("/api/v1/jobs/batch", json={"jobs": [{"command": "x"}] * 1001})
        assert too_many.status_code in (413, 400)
        total = len(client.get("/api/v1/jobs", params={"limit": 1000}).json()["items"])
    assert total == 53  # the refused batches stored nothing
    for item in items[:50:10]:
        job = server.wait_state(item["id"], {"succeeded"}, timeout=60)
        assert job["exit_code"] == 0
    out = server.hodei("logs", items[7]["id"])
    assert out.stdout == b"batch-7\n"
