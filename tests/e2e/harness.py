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

import httpx
import psutil

READY = re.compile(r"hodei server ready: (http://\S+) grpc (\S+)")


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

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

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
