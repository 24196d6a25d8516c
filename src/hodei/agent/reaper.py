"""The job reaper: kills the jobs of an agent that died without cleaning up (kill -9, the OOM
killer), so no job runs on unseen.

A tiny process, started with the agent's first job, reads "+PGID" and "-PGID" lines on its
stdin. The agent holds the pipe's only write end (non-inheritable: jobs never get it), so the
pipe ends when the agent ends, however it ends; the reaper then kills every process group it
still lists and exits. It replaces exec'ing `setpriv --pdeathsig` in front of every job (about
1 ms of CPU and a millisecond of latency per job), and it reaches the job's whole process group,
not only its first process.

It also ends what left the groups (hodei.agent.containment): a line "+/path" lists a job
cgroup, killed whole (cgroup.kill, else SIGKILL to its pids until empty) and removed; a line
"+%ATTEMPT:JOB_ID" lists a job for the subreaper fallback: every process whose environment has
that HODEI_JOB_ID and HODEI_ATTEMPT is killed (an orphan that cleared its environment escapes
this: once the agent, their subreaper, is gone, nothing else ties it to the job).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import subprocess
import threading
from typing import IO, TYPE_CHECKING

from hodei.agent.frozen import python_command

if TYPE_CHECKING:
    from hodei.agent.containment import Jail

log = logging.getLogger(__name__)


def _jail_lines(jail: Jail) -> list[str]:
    if jail.cgroup:
        return [jail.cgroup] if "\n" not in jail.cgroup else []
    job_id, attempt = jail.key
    return [] if "\n" in job_id else [f"%{attempt}:{job_id}"]


# The reaper itself: no site, no environment (-I -S), so it starts in a few milliseconds.
SCRIPT = """
import os, signal, sys, time
groups, listed = set(), set()
for line in sys.stdin:
    line = line.rstrip("\\n")
    item = line[1:]
    if item[:1] not in ("/", "%"):
        try:
            item = int(item)
        except ValueError:
            continue
    if line[:1] == "+":
        listed.add(item)
    elif line[:1] == "-":
        listed.discard(item)
for item in listed:
    if isinstance(item, int):
        try:
            os.killpg(item, signal.SIGKILL)
        except OSError:
            pass
def kill_cgroup(path):
    for _ in range(500):
        try:
            with open(path + "/cgroup.kill", "w") as f:
                f.write("1")
        except OSError:
            try:
                with open(path + "/cgroup.procs") as f:
                    for pid in f.read().split():
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except OSError:
                            pass
            except OSError:
                pass
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)
tags = set()
for item in listed:
    if isinstance(item, str) and item[0] == "/":
        kill_cgroup(item)
    elif isinstance(item, str):
        attempt, _, job = item[1:].partition(":")
        tags.add((("HODEI_JOB_ID=" + job).encode(), ("HODEI_ATTEMPT=" + attempt).encode()))
for _ in range(20 if tags else 0):
    found = False
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/" + pid + "/environ", "rb") as f:
                env = f.read().split(b"\\0")
        except OSError:
            continue
        if any(job in env and attempt in env for job, attempt in tags):
            found = True
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
    if not found:
        break
    time.sleep(0.01)
"""


class JobReaper:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pipe: IO[bytes] | None = None
        self._failed = False

    def ready(self) -> bool:
        """Start the reaper if needed; False when it cannot run (callers fall back)."""
        with self._lock:
            if self._pipe is None and not self._failed:
                # A clean exit lets it go (it then finds nothing left to kill) and reaps it.
                atexit.register(self.close)
                try:
                    self._proc = subprocess.Popen(
                        python_command(SCRIPT),
                        stdin=subprocess.PIPE,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,  # terminal signals for the agent miss it
                    )
                    self._pipe = self._proc.stdin
                except OSError as exc:
                    log.warning("job reaper not started (%s): falling back to setpriv", exc)
                    self._failed = True
            return self._pipe is not None

    @property
    def pid(self) -> int:
        proc = self._proc
        return proc.pid if proc is not None else 0

    def watch(self, pgid: int) -> None:
        self._send(f"+{pgid}\n")

    def forget(self, pgid: int) -> None:
        self._send(f"-{pgid}\n")

    def watch_jail(self, jail: Jail) -> None:
        """List the job's cgroup, or its environment tag when it has none."""
        for line in _jail_lines(jail):
            self._send(f"+{line}\n")

    def forget_jail(self, jail: Jail) -> None:
        for line in _jail_lines(jail):
            self._send(f"-{line}\n")

    def _send(self, line: str) -> None:
        with self._lock:
            if self._pipe is None:
                return
            try:
                self._pipe.write(line.encode())
                self._pipe.flush()
            except OSError as exc:  # it died: jobs from now on are not covered
                log.error("job reaper gone (%s): a killed agent may leave jobs behind", exc)
                self._pipe = None
                self._failed = True

    def close(self) -> None:
        """Let it go (it exits at the end of its input) and reap it."""
        with self._lock:
            pipe, proc, self._pipe, self._proc = self._pipe, self._proc, None, None
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
        if proc is not None:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
