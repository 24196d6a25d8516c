"""A full disk loses no acknowledged data and strands no job, on a real small file system.

HODEI_HOME lives on a tmpfs of its own (24 MiB: room for the database, its WAL, the logs and
the agent's own log under run/, and quick to fill). A job prints numbered lines; while it
runs the file system is filled to the last byte, and the job exits 0 with the disk still full.
Its result cannot be stored, so the job stays active (not succeeded, not failed), reads still
work, submits are refused with a clear 503, and the server says why once, not once per chunk.
Once the filler is deleted the server's retries (it restarts the worker's stream after 1-30 s)
get everything in: the job succeeds on its first attempt with every line exactly once, in
order, and new jobs run again.

Needs root (to mount); skips otherwise, or when the mount fails (which fails the test under
HODEI_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from harness import RunningServer, start_server, stop_server

pytestmark = pytest.mark.e2e

SIZE = "24m"
LINES = 300
# Lines of 200+ bytes: 60 KiB in all, many more pages than the log file already has (tmpfs
# gives whole pages, so short lines would still fit in the page the disk filled after).
PAD = "x" * 200
# The job leaves a mark outside the small file system once it has printed everything: then it
# has exited (0) with the disk still full.
JOB = (
    "pad={pad}; for i in $(seq 1 {lines}); do echo line-$i $pad; sleep 0.02; done; echo done; "
    ": > {mark}"
)
ACTIVE = {"assigned", "running"}
ENDED = {"succeeded", "failed", "cancelled", "timed_out"}
CAUSE = re.compile(r"cannot record|no space|full", re.IGNORECASE)


def _unavailable(message: str) -> NoReturn:
    if os.environ.get("HODEI_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (HODEI_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@contextlib.contextmanager
def small_tmpfs(where: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs", str(where)],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        _unavailable(f"cannot mount a tmpfs: {exc}")
    if done.returncode != 0:
        _unavailable(f"cannot mount a tmpfs: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30, check=False)


def fill(path: Path, limit_bytes: int) -> int:
    """Write `path` until the file system refuses another byte (ENOSPC); bounded by
    `limit_bytes`. Returns the bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for block in (1 << 20, 4096, 1):
            data = b"\0" * block
            while written < limit_bytes:
                try:
                    n = os.write(fd, data)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break  # this size no longer fits: try a smaller one
                written += n
                if n < block:
                    break
    finally:
        os.close(fd)
    return written


def space_left(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def cause_lines(server: RunningServer, since: int) -> list[str]:
    return [line for line in server.stderr[since:] if CAUSE.search(line)]


def wait_for(what: str, check: Callable[[], object], timeout: float, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not within {timeout}s"
        time.sleep(every)


def test_a_full_disk_loses_nothing_and_strands_no_job(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        home = disk / "home"
        server = start_server(home)
        filler = disk / "filler"
        try:
            with server.http() as client:
                mark = tmp_path / "exited"
                command = JOB.format(pad=PAD, lines=LINES, mark=mark)
                job_id = client.post("/api/v1/jobs", json={"command": command}).json()["id"]
                server.wait_state(job_id, {"running"}, timeout=30)
                # Some output stored first, so the disk fills in the middle of the log.
                wait_for(
                    "line-1 in the log",
                    lambda: b"line-1 " in client.get(f"/api/v1/jobs/{job_id}/logs").content,
                    timeout=20,
                )
                before = len(server.stderr)
                written = fill(filler, limit_bytes=64 << 20)
                assert written > 0 and space_left(disk) == 0
                assert client.get(f"/api/v1/jobs/{job_id}").json()["state"] == "running", (
                    "the job ended before the disk was full: make it print for longer"
                )

                # The job exits 0 with the disk full; its result cannot be stored, so it stays
                # active, and its agent keeps the result (and the output the server refused).
                wait_for("the job's exit", mark.exists, timeout=60)
                assert space_left(disk) == 0, "something freed space while the job ran"
                time.sleep(3)  # the result reaches the server, which cannot store it
                job = client.get(f"/api/v1/jobs/{job_id}").json()
                assert job["state"] in ACTIVE, job
                assert client.get("/api/v1/jobs").status_code == 200  # reads still answer

                refused = client.post("/api/v1/jobs", json={"command": "echo no room"})
                assert refused.status_code in (503, 507), refused.text
                message = refused.json()["error"]["message"]
                assert re.search(r"full|no space", message, re.IGNORECASE), message

                said = cause_lines(server, before)
                assert said, "the server's log does not say why:\n" + "".join(
                    server.stderr[before:]
                )
                assert len(said) <= 5, "the cause is repeated:\n" + "".join(said)

                freed = len(server.stderr)
                filler.unlink()
                job = server.wait_state(job_id, ENDED, timeout=60)
                assert job["state"] == "succeeded", job
                assert job["exit_code"] == 0 and job["attempts"] == 1, job

                log = server.hodei("logs", job_id).stdout.decode()
                want = "".join(f"line-{i} {PAD}\n" for i in range(1, LINES + 1)) + "done\n"
                assert log.replace("\r\n", "\n") == want

                again = client.post("/api/v1/jobs", json={"command": "echo room again"})
                assert again.status_code == 201, again.text
                done = server.wait_state(again.json()["id"], ENDED, timeout=30)
                assert done["state"] == "succeeded", done
                assert client.get(f"/api/v1/jobs/{done['id']}/logs").text == "room again\n"

            said = cause_lines(server, before)
            assert len(said) <= 5, "the cause is repeated:\n" + "".join(said)
            assert not [line for line in server.stderr if "never arrived" in line]
            assert [line for line in server.stderr[freed:] if "records reports again" in line]
        finally:
            with contextlib.suppress(OSError):
                filler.unlink()
            stop_server(server)
            shutil.rmtree(home, ignore_errors=True)
