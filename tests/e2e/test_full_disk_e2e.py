"""A full disk loses no acknowledged data and strands no job: the server's home on a small
tmpfs this test mounts (as root) fills while a job runs; once space is freed the job ends
succeeded, with its whole output, once."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import RunningServer, start_server, stop_server

pytestmark = pytest.mark.e2e

LINES = 300
JOB = f"for i in $(seq 1 {LINES}); do echo line-$i; sleep 0.01; done; echo done"


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    required = os.environ.get("HODEI_REQUIRE_SERVICES") == "1"
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        message = f"cannot mount a tmpfs: {mounted.stderr.strip()}"
        if required:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(path: Path, limit: int = 256 << 20) -> int:
    """Write zeros to `path` until the file system refuses (bounded); the bytes written."""
    written = 0
    chunk = b"\0" * (256 << 10)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while written < limit:
            try:
                written += os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                # Fill the last partial block too, byte runs at a time.
                for size in (4096, 512, 1):
                    with contextlib.suppress(OSError):
                        while True:
                            written += os.write(fd, b"\0" * size)
                return written
    finally:
        os.close(fd)
    raise AssertionError(f"the file system did not fill within {limit} bytes")


def job_state(server: RunningServer, job_id: str) -> dict[str, object]:
    with server.http() as client:
        job: dict[str, object] = client.get(f"/api/v1/jobs/{job_id}").json()
        return job


def test_a_result_written_on_a_full_disk_is_kept_until_space_returns(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small", "24m") as home:
        server = start_server(home, "--max-workers", "1", "--worker-grace", "5m")
        try:
            out = server.hodei("submit", "--", "bash", "-c", JOB)
            assert out.returncode == 0, out.stderr
            job_id = out.stdout.decode().strip()
            server.wait_state(job_id, {"running"}, timeout=30)
            filler = home / "filler"
            fill(filler)
            time.sleep(LINES * 0.01 + 3)  # the job ends (exit 0) while the disk is full
            job = job_state(server, job_id)
            assert job["state"] in ("running", "assigned"), job  # not lost, not failed
            with server.http() as client:
                refused = client.post("/api/v1/jobs", json={"command": "true"})
            assert refused.status_code in (503, 507), refused.text
            assert refused.json()["error"]["message"]
            filler.unlink()
            done = server.wait_state(job_id, {"succeeded", "failed"}, timeout=90)
            assert done["state"] == "succeeded" and done["exit_code"] == 0, done
            assert done["attempts"] == 1, done
            log = server.hodei("logs", "--raw", job_id).stdout.decode()
            lines = log.replace("\r\n", "\n").splitlines()
            assert lines == [f"line-{i}" for i in range(1, LINES + 1)] + ["done"], lines[-5:]
            again = server.hodei("submit", "-f", "--", "echo", "space is back")
            assert again.returncode == 0 and b"space is back" in again.stdout
        finally:
            stop_server(server)
        text = "".join(server.stderr)
        assert "never arrived" not in text
        causes = [line for line in text.splitlines() if "cannot record reports" in line]
        assert 1 <= len(causes) <= 3, causes  # the cause once, not once per chunk
        assert "records reports again" in text
