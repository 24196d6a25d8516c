"""End-to-end harness: the server and its agents as real processes, driven through the CLI."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import httpx
import psutil

READY = re.compile(r"hodei server ready: (https?://\S+) grpc (\S+)")


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _Metadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Adds the given metadata (the API token) to every call."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata

    def _details(self, details: Any) -> _Details:
        return _Details(
            details.method,
            details.timeout,
            (*(details.metadata or ()), *self.metadata),
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)


@dataclass
class RunningServer:
    home: Path
    proc: subprocess.Popen[bytes]
    url: str = ""
    grpc: str = ""
    stderr: list[str] = field(default_factory=list)
    pump: threading.Thread | None = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "HODEI_URL": self.url, "HODEI_HOME": str(self.home)}

    def hodei(
        self, *args: str, input: bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "hodei", *args],
            input=input,
            capture_output=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )

    @property
    def token(self) -> str:
        """The admin API token the server wrote to its home (empty in --dev mode)."""
        path = self.home / "admin.token"
        return path.read_text().strip() if path.exists() else ""

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def grpc_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def grpc_channel(self) -> grpc.Channel:
        """A plaintext channel to the server whose calls carry the admin token."""
        channel = grpc.insecure_channel(self.grpc)
        return grpc.intercept_channel(channel, _Metadata(self.grpc_metadata()))

    def http(self, authenticated: bool = True) -> httpx.Client:
        headers = self.auth() if authenticated else {}
        return httpx.Client(base_url=self.url, timeout=30, headers=headers)

    def wait_state(self, job_id: str, states: set[str], timeout: float = 30) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        with self.http() as client:
            while True:
                job: dict[str, object] = client.get(f"/api/v1/jobs/{job_id}").json()
                if job["state"] in states:
                    return job
                if time.monotonic() > deadline:
                    raise AssertionError(f"job {job_id} still {job['state']} after {timeout}s")
                time.sleep(0.05)

    def agent_pids(self) -> list[int]:
        return [p.pid for p in psutil.Process(self.proc.pid).children()]


def start_server(home: Path, *extra: str, timeout: float = 20) -> RunningServer:
    env = {**os.environ, "HODEI_HOME": str(home), "HODEI_LOG_LEVEL": "INFO"}
    for key in ("HODEI_URL", "HODEI_DATABASE_URL", "HODEI_PROVIDER"):
        env.pop(key, None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hodei",
            "server",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            *extra,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    server = RunningServer(home, proc)
    ready = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace")
            server.stderr.append(line)
            match = READY.search(line)
            if match:
                server.url, server.grpc = match.group(1), match.group(2)
                ready.set()

    server.pump = threading.Thread(target=pump, daemon=True)
    server.pump.start()
    if not ready.wait(timeout):
        proc.kill()
        proc.wait()
        server.pump.join(5)
        if proc.stderr is not None:
            proc.stderr.close()
        raise AssertionError("server did not start:\n" + "".join(server.stderr[-40:]))
    return server


def stop_server(server: RunningServer, sig: int = signal.SIGTERM) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(sig)
        try:
            server.proc.wait(30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    if server.pump is not None:
        server.pump.join(10)
    if server.proc.stderr is not None:
        server.proc.stderr.close()
