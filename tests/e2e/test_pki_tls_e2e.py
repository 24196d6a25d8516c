"""mTLS for agents, end to end: `hodei server --tls`, enrollment with the OTP, rotation while a
job runs, and refusals (no certificate, another CA, expired, revoked, someone else's session)."""

from __future__ import annotations

import asyncio
import os
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from harness import RunningServer, start_server, stop_server
from proxy import CuttableProxy

from hodei._proto.hodei.v1 import worker_pb2 as pb
from hodei._proto.hodei.v1 import worker_pb2_grpc
from hodei.security import pki

pytestmark = pytest.mark.e2e


def ca_path(server: RunningServer) -> Path:
    return server.home / "pki" / "ca.crt"


def https(server: RunningServer) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(ca_path(server)))
    return httpx.Client(base_url=server.url, timeout=30, verify=context, headers=server.auth())


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def wait_job(server: RunningServer, job_id: str, states: set[str], timeout: float = 30) -> Any:
    with https(server) as client:

        def state() -> Any:
            job = client.get(f"/api/v1/jobs/{job_id}").json()
            return job if job["state"] in states else None

        return wait_for(f"job {job_id} in {states}", state, timeout)


def certs(server: RunningServer) -> list[dict[str, Any]]:
    with https(server) as client:
        items: list[dict[str, Any]] = client.get("/api/v1/pki/certs").json()["items"]
        return items


def new_otp(server: RunningServer) -> str:
    out = server.hodei("worker-otp")
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode().strip()


def static_agent(server: RunningServer, grpc_addr: str) -> subprocess.Popen[bytes]:
    env = {**server.env(), "HODEI_TOKEN": new_otp(server)}
    args = ["--server", grpc_addr, "--ca", str(ca_path(server)), "--enroll-url", server.url]
    return subprocess.Popen(
        [sys.executable, "-m", "hodei", "agent", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def finish(agent: subprocess.Popen[bytes]) -> str:
    if agent.poll() is None:
        agent.terminate()
    _, err = agent.communicate(timeout=30)
    return err.decode(errors="replace")


def enroll(server: RunningServer, otp: str) -> tuple[bytes, bytes, dict[str, Any]]:
    """Enroll as an agent does: (key PEM, certificate PEM, the answer)."""
    key = pki.new_key()
    with https(server) as client:
        answer = client.post(
            "/api/v1/agents/enroll", json={"otp": otp, "csr": pki.make_csr(key).decode()}
        )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return pki.key_to_pem(key), body["certificate"].encode(), body


async def connect(
    server: RunningServer, key: bytes | None, cert: bytes | None, register: pb.Register
) -> tuple[grpc.StatusCode | None, str, grpc.aio.StreamStreamCall[Any, Any] | None, Any]:
    """Open a Connect stream and register; (code, details) of a refusal, else the open call."""
    creds = grpc.ssl_channel_credentials(ca_path(server).read_bytes(), key, cert)
    channel = grpc.aio.secure_channel(server.grpc, creds)
    call = worker_pb2_grpc.WorkerServiceStub(channel).Connect()  # type: ignore[no-untyped-call]
    try:
        await call.write(pb.AgentMessage(register=register))
        reply = await asyncio.wait_for(call.read(), 20)
    except grpc.aio.AioRpcError as exc:
        await channel.close()
        return exc.code(), exc.details() or "", None, None
    if reply is grpc.aio.EOF:
        code, details = await call.code(), await call.details()
        await channel.close()
        return code, details, None, None
    return None, "", call, channel


def refusal(server: RunningServer, key: bytes | None, cert: bytes | None) -> grpc.StatusCode:
    code, _, call, channel = asyncio.run(connect(server, key, cert, pb.Register(hostname="t")))
    assert call is None and channel is None and code is not None, "the server let it in"
    return code


def test_tls_server_runs_jobs_on_local_workers_that_enroll_and_rotate(
    server_factory: type,
) -> None:
    server: RunningServer = server_factory.start("--tls", "--cert-lifetime", "3s")
    assert server.url.startswith("https://")
    pki_dir = server.home / "pki"
    for key in ("ca.key", "server.key"):
        assert stat.S_IMODE((pki_dir / key).stat().st_mode) == 0o600
    # The CLI trusts the home's CA: it runs a job that outlives its worker's first certificate.
    out = server.hodei("submit", "-f", "--", "sh", "-c", "echo start; sleep 5; echo end")
    assert out.returncode == 0, out.stderr.decode() + "".join(server.stderr[-30:])
    assert out.stdout == b"start\nend\n"
    issued = certs(server)
    workers = {c["worker_id"] for c in issued}
    assert len(workers) == 1 and next(iter(workers)).startswith("local-")
    assert len(issued) >= 2  # renewed at least once while the job ran
    assert not any("cutting off" in line for line in server.stderr)
    # Plain HTTP gets no answer from the HTTPS port; an unknown CA is not trusted.
    with pytest.raises(httpx.HTTPError):
        httpx.get(server.url.replace("https://", "http://") + "/healthz", timeout=5)
    env = {**server.env(), "HODEI_CA": str(Path(__file__))}  # not a CA: refused, not ignored
    failed = subprocess.run(
        [sys.executable, "-m", "hodei", "jobs"], env=env, capture_output=True, timeout=60
    )
    assert failed.returncode == 2 and b"cannot load the CA" in failed.stderr


def test_agents_without_a_valid_client_certificate_are_refused(
    server_factory: type, tmp_path: Path
) -> None:
    server: RunningServer = server_factory.start("--tls", "--max-workers", "0")
    # A real agent speaking plaintext gRPC to the TLS port never gets in.
    plain = subprocess.run(
        [sys.executable, "-m", "hodei", "agent", "--server", server.grpc],
        env={**server.env(), "HODEI_TOKEN": new_otp(server), "HODEI_CA": ""},
        capture_output=True,
        timeout=60,
    )
    assert plain.returncode == 1, plain.stderr.decode()
    # No client certificate, one from another CA, and an expired one from this CA: the
    # handshake fails, so the stream never opens.
    assert refusal(server, None, None) == grpc.StatusCode.UNAVAILABLE
    other_key, other_ca = pki.make_ca("other CA", time.time())
    key = pki.new_key()
    foreign = pki.sign_agent_csr(other_key, other_ca, pki.make_csr(key), "w", time.time(), 600)
    assert refusal(server, pki.key_to_pem(key), pki.cert_to_pem(foreign)) == (
        grpc.StatusCode.UNAVAILABLE
    )
    ca_key = pki.key_from_pem((server.home / "pki" / "ca.key").read_bytes())
    ca_cert = pki.cert_from_pem(ca_path(server).read_bytes())
    past = time.time() - 7200
    expired = pki.sign_agent_csr(ca_key, ca_cert, pki.make_csr(key), "w", past, 600)
    assert refusal(server, pki.key_to_pem(key), pki.cert_to_pem(expired)) == (
        grpc.StatusCode.UNAVAILABLE
    )
    # The OTP is spent by enrollment: a second enrollment with it is refused.
    otp = new_otp(server)
    key_pem, cert_pem, answer = enroll(server, otp)
    with https(server) as client:
        again = client.post(
            "/api/v1/agents/enroll",
            json={"otp": otp, "csr": pki.make_csr(pki.new_key()).decode()},
            # Not behind a proxy: a forwarded-for header must not change who is limited per
            # host and audited (it would let a caller spread OTP guesses over made-up hosts).
            headers={"X-Forwarded-For": "203.0.113.9"},
        )
        trail = client.get("/api/v1/audit", params={"action": "worker.refused"}).json()
    assert again.status_code == 401
    assert trail["items"][0]["actor"] == "peer:127.0.0.1", trail["items"][0]
    # A certificate cannot act as another worker (here: with another worker's OTP).
    other_otp = new_otp(server)
    code, details, _, _ = asyncio.run(
        connect(server, key_pem, cert_pem, pb.Register(hostname="t", otp=other_otp))
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED and "another worker" in details

    async def registered_then_revoked() -> tuple[str, grpc.StatusCode, grpc.StatusCode | None]:
        code, _, call, channel = await connect(server, key_pem, cert_pem, pb.Register())
        assert call is not None, code
        serial = answer["serial"]
        revoked = await asyncio.to_thread(server.hodei, "pki", "revoke", serial)
        assert revoked.returncode == 0, revoked.stderr.decode()
        try:
            while await asyncio.wait_for(call.read(), 20) is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError:
            pass
        cut = await call.code()
        await channel.close()
        again, _, _, _ = await connect(server, key_pem, cert_pem, pb.Register())
        return revoked.stdout.decode(), cut, again

    out, cut, again_code = asyncio.run(registered_then_revoked())
    assert answer["worker_id"] in out
    assert cut == grpc.StatusCode.UNAUTHENTICATED  # the live stream was closed at once
    assert again_code == grpc.StatusCode.UNAUTHENTICATED  # and a reconnect is refused
    listed = server.hodei("pki", "list")
    assert listed.returncode == 0
    line = next(ln for ln in listed.stdout.decode().splitlines() if answer["serial"] in ln)
    assert "revoked" in line


def test_revoked_agent_is_cut_off_at_once_and_stays_revoked_after_a_restart(
    server_factory: type, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    # A long worker grace: the job must end because of the revocation, not the grace period.
    flags = ("--tls", "--max-workers", "0", "--worker-grace", "5m")
    server: RunningServer = server_factory.start(*flags, home=home)
    agent = static_agent(server, server.grpc)
    try:
        out = server.hodei("submit", "--", "sh", "-c", "echo running; sleep 60")
        job_id = out.stdout.decode().strip()
        job = wait_job(server, job_id, {"running"})
        worker_id = job["worker_id"]
        revoked = server.hodei("pki", "revoke", worker_id)
        assert revoked.returncode == 0, revoked.stderr.decode()
        # Lost to the platform, not the job's fault: queued again (no worker left to take it).
        lost = wait_job(server, job_id, {"queued"}, timeout=20)
        assert worker_id in str(lost["reason"]), lost
        assert lost["attempt_history"][0]["failure"] == "worker_lost", lost
        code = agent.wait(30)
        assert code != 0
    finally:
        err = finish(agent)
    assert "cutting off worker" in "".join(server.stderr)
    assert "refused" in err or "UNAUTHENTICATED" in err, err
    stop_server(server)
    again = start_server(home, *flags)
    try:
        states = {c["worker_id"]: c["state"] for c in certs(again)}
        assert states[worker_id] == "revoked"
    finally:
        stop_server(again)


def test_rotation_while_a_job_runs_then_reconnecting_with_the_new_certificate(
    server_factory: type,
) -> None:
    server: RunningServer = server_factory.start(
        "--tls", "--max-workers", "0", "--cert-lifetime", "3s"
    )
    host, port = server.grpc.rsplit(":", 1)
    with CuttableProxy(host, int(port)) as proxy:
        agent = static_agent(server, f"127.0.0.1:{proxy.port}")
        try:
            out = server.hodei("submit", "--", "sh", "-c", "echo start; sleep 8; echo end")
            job_id = out.stdout.decode().strip()
            wait_job(server, job_id, {"running"})
            # The first certificate lapses while the job runs: renewed meanwhile.
            wait_for(
                "the first certificate to expire",
                lambda: any(c["state"] == "expired" for c in certs(server)),
            )
            assert any(c["state"] == "valid" for c in certs(server))
            # A reconnect now must present the renewed certificate (the first one is expired).
            proxy.cut()
            time.sleep(0.3)
            proxy.restore()
            job = wait_job(server, job_id, {"succeeded", "failed"}, timeout=40)
            assert job["state"] == "succeeded", "".join(server.stderr[-30:])
            assert job["attempts"] == 1
        finally:
            err = finish(agent)
    assert server.hodei("logs", job_id).stdout == b"start\nend\n"
    assert any("resumed its session" in line for line in server.stderr), err
    assert len({c["serial"] for c in certs(server)}) >= 3  # enrolled, then renewed twice


def test_pki_init_refuses_to_replace_a_ca_without_force(tmp_path: Path) -> None:
    env = {**os.environ, "HODEI_HOME": str(tmp_path)}

    def init(*args: str) -> subprocess.CompletedProcess[bytes]:
        cmd = [sys.executable, "-m", "hodei", "pki", "init", *args]
        return subprocess.run(cmd, env=env, capture_output=True, timeout=60)

    first = init("--san", "localhost", "--san", "10.0.0.7")
    assert first.returncode == 0, first.stderr.decode()
    ca = (tmp_path / "pki" / "ca.crt").read_bytes()
    second = init()
    assert second.returncode == 1 and b"--force" in second.stderr
    assert (tmp_path / "pki" / "ca.crt").read_bytes() == ca
    assert init("--force").returncode == 0
    assert (tmp_path / "pki" / "ca.crt").read_bytes() != ca
