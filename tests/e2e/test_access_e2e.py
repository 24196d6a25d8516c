"""API tokens with roles, dev mode, and the audit trail, against a real server."""

from __future__ import annotations

import subprocess
import sys
import time

import grpc
import httpx
import pytest
from harness import RunningServer, start_server, stop_server

from hodei._proto.hodei.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc

pytestmark = pytest.mark.e2e


def make_token(server: RunningServer, role: str, name: str = "") -> str:
    out = server.hodei("token", "create", "--role", role, "--name", name or role)
    assert out.returncode == 0, out.stderr.decode()
    token = out.stdout.decode().strip()
    assert token.startswith("hodei_") and "\n" not in token
    return token


def as_token(server: RunningServer, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    )


def test_requests_without_a_valid_token_are_refused(server: RunningServer) -> None:
    with server.http(authenticated=False) as client:
        assert client.get("/healthz").status_code == 200  # health needs no token
        missing = client.get("/api/v1/jobs")
        assert missing.status_code == 401
        assert "API token is required" in missing.json()["error"]["message"]
        assert missing.headers["www-authenticate"].startswith("Bearer")
        forged = client.get(
            "/api/v1/jobs", headers={"Authorization": "Bearer hodei_000000000000_" + "x" * 43}
        )
        assert forged.status_code == 401 and forged.json()["error"]["message"] == (
            "invalid API token"
        )
        junk = client.post("/api/v1/jobs", json={"command": "true"}, headers={"Authorization": "x"})
        assert junk.status_code == 401
    with server.http() as admin:
        jobs = admin.get("/api/v1/jobs", params={"limit": 1000}).json()["items"]
    assert jobs == []  # the refused submit queued nothing


def test_roles_limit_what_each_token_may_do(server: RunningServer) -> None:
    viewer, submitter = make_token(server, "viewer"), make_token(server, "submitter")
    with as_token(server, viewer) as client:
        assert client.get("/api/v1/jobs").status_code == 200
        refused = client.post("/api/v1/jobs", json={"command": "echo no"})
        assert refused.status_code == 403
        assert "role viewer may not do this" in refused.json()["error"]["message"]
        assert client.get("/api/v1/audit").status_code == 403
    with as_token(server, submitter) as client:
        created = client.post("/api/v1/jobs", json={"command": "echo yes", "queued_by": "mallory"})
        assert created.status_code == 201
        job = created.json()
        # Who queued it is the token, whatever the body claims.
        assert job["queued_by"].startswith("token:") and "submitter" in job["queued_by"]
        assert client.put("/api/v1/secrets/X", json={"value": "abcdefgh"}).status_code == 403
        assert client.post("/api/v1/tokens", json={"role": "admin"}).status_code == 403
    server.wait_state(job["id"], {"succeeded"})
    # The CLI takes a token from HODEI_API_TOKEN.
    env_viewer = {**server.env(), "HODEI_API_TOKEN": viewer}
    out = subprocess.run(
        [sys.executable, "-m", "hodei", "submit", "--", "true"],
        env=env_viewer,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert out.returncode != 0 and "role viewer may not do this" in out.stderr.decode()


def test_a_revoked_token_stops_working_at_once(server: RunningServer) -> None:
    token = make_token(server, "submitter", "ci-bot")
    token_id = token.split("_")[1]
    with as_token(server, token) as client:
        assert client.get("/api/v1/jobs").status_code == 200
        out = server.hodei("token", "revoke", token_id)
        assert out.returncode == 0, out.stderr.decode()
        refused = client.get("/api/v1/jobs")
        assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
    listed = server.hodei("token", "list")
    row = next(line for line in listed.stdout.decode().splitlines() if token_id in line)
    assert "ci-bot" in row and "submitter" in row and row.split()[-1] != "-"


def test_grpc_calls_need_a_token_with_the_role(server: RunningServer) -> None:
    viewer = make_token(server, "viewer")
    request = jobs_pb2.QueueJobRequest(job_definition=jobs_pb2.JobDefinition(command="true"))
    with grpc.insecure_channel(server.grpc) as channel:
        stub = jobs_pb2_grpc.JobExecutionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as anonymous:
            stub.QueueJob(request, timeout=10)
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        metadata = (("authorization", f"Bearer {viewer}"),)
        with pytest.raises(grpc.RpcError) as forbidden:
            stub.QueueJob(request, timeout=10, metadata=metadata)
        assert forbidden.value.code() == grpc.StatusCode.PERMISSION_DENIED
        listed = stub.ListJobs(jobs_pb2.ListJobsRequest(), timeout=10, metadata=metadata)
        assert list(listed.items) == []
    with server.grpc_channel() as channel:  # the admin token
        stub = jobs_pb2_grpc.JobExecutionServiceStub(channel)
        reply = stub.QueueJob(request, timeout=10)
        ask = jobs_pb2.GetJobRequest(job_id=common_pb2.JobId(value=reply.job.id))
        assert stub.GetJob(ask, timeout=10).queued_by.startswith("token:")


def test_the_audit_trail_says_who_did_what(server: RunningServer) -> None:
    submitter = make_token(server, "submitter", "release-bot")
    with as_token(server, submitter) as client:
        job_id = client.post("/api/v1/jobs", json={"command": "sleep 30"}).json()["id"]
        assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
        client.get("/api/v1/audit")  # refused: audited too
    assert server.hodei("secret", "set", "DB_PASSWORD", input=b"s3cr3t-value").returncode == 0
    with server.http(authenticated=False) as client:
        client.get("/api/v1/jobs")
    with server.http() as client:
        entries = client.get("/api/v1/audit", params={"limit": 1000}).json()["items"]
        jobs_only = client.get("/api/v1/audit", params={"action": "job."}).json()["items"]
    by_action = {}
    for entry in entries:
        by_action.setdefault(entry["action"], []).append(entry)
    submit = next(e for e in by_action["job.submit"] if e["target"] == job_id)
    assert "release-bot" in submit["actor"]
    cancel = next(e for e in by_action["job.cancel"] if e["target"] == job_id)
    assert cancel["actor"] == submit["actor"]
    assert any(e["target"] == "DB_PASSWORD" for e in by_action["secret.set"])
    assert any("release-bot" in e["actor"] for e in by_action["auth.forbidden"])
    assert any(e["actor"] == "anonymous" for e in by_action["auth.denied"])
    assert by_action["token.create"]
    assert {e["action"] for e in jobs_only} <= {"job.submit", "job.cancel", "job.retry"}
    assert all("s3cr3t-value" not in str(e) for e in entries)
    shown = server.hodei("audit", "--action", "job.cancel")
    assert shown.returncode == 0, shown.stderr.decode()
    assert job_id in shown.stdout.decode() and "release-bot" in shown.stdout.decode()


def test_dev_mode_needs_no_token_and_only_runs_on_loopback(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = start_server(tmp_path / "dev", "--dev")
    try:
        assert not (tmp_path / "dev" / "admin.token").exists()
        with server.http(authenticated=False) as client:
            assert client.post("/api/v1/jobs", json={"command": "true"}).status_code == 201
    finally:
        stop_server(server)
    out = subprocess.run(
        [sys.executable, "-m", "hodei", "server", "--dev", "--http-addr", "0.0.0.0:0"],
        env={**server.env(), "HODEI_HOME": str(tmp_path / "dev2")},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert out.returncode != 0
    assert "dev mode (no API tokens) is only allowed on loopback" in out.stderr.decode()


def test_forged_and_replayed_worker_otps_are_refused_and_audited(server: RunningServer) -> None:
    otp = server.hodei("worker-otp")
    assert otp.returncode == 0, otp.stderr.decode()
    genuine = otp.stdout.decode().strip().split()[-1]
    cmd = [sys.executable, "-m", "hodei", "agent", "--server", server.grpc]

    def env(otp_value: str) -> dict[str, str]:
        return {**server.env(), "HODEI_TOKEN": otp_value}

    forged = subprocess.run(cmd, env=env("hwp_" + "A" * 43), capture_output=True, timeout=60)
    assert forged.returncode == 3, forged.stderr.decode()
    first = subprocess.Popen(
        cmd, env=env(genuine), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        with server.http() as client:
            while not any(
                w["id"].startswith("static-") for w in client.get("/api/v1/workers").json()["items"]
            ):
                assert time.monotonic() < deadline, "the agent with the genuine OTP never came"
                assert first.poll() is None, first.stderr.read().decode() if first.stderr else ""
                time.sleep(0.05)
        replay = subprocess.run(cmd, env=env(genuine), capture_output=True, timeout=60)
        assert replay.returncode == 3, replay.stderr.decode()
    finally:
        first.terminate()
        first.wait(timeout=30)
        if first.stderr is not None:
            first.stderr.close()
    with server.http() as client:
        entries = client.get("/api/v1/audit", params={"action": "worker."}).json()["items"]
    refused = [e for e in entries if e["action"] == "worker.refused"]
    assert len(refused) == 2
    assert all("invalid, expired or already used" in e["detail"] for e in refused)
    assert all(e["actor"].startswith("peer:") for e in refused)
    registered = [e for e in entries if e["action"] == "worker.register"]
    assert [e["target"] for e in registered if e["target"].startswith("static-")]
    assert any(e["action"] == "worker.otp" for e in entries)
