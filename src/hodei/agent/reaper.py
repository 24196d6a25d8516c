"""The job reaper: kills the jobs of an agent that died without cleaning up (kill -9, the OOM
killer), so no job runs on unseen.

A tiny process, started with the agent's first job, reads "+PGID" and "-PGID" lines on its
stdin. The agent holds the pipe's only write end (non-inheritable: jobs never get it), so the
pipe ends when the agent ends, however it ends; the reaper then kills every process group it
still lists and exits. It replaces exec'ing `setpriv --pdeathsig` in front of every job (about
1 ms of CPU and a millisecond of latency per job), and it reaches the job's whole process group,
not only its first process.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import subprocess
import sys
import threading
from typing import IO

log = logging.getLogger(__name__)

# The reaper itself: no site, no environment (-I -S), so it starts in a few milliseconds.
SCRIPT = """
import os, signal, sys
groups = set()
for line in sys.stdin:
    try:
        pgid = int(line[1:])
    except ValueError:
        continue
    if line[0] == "+":
        groups.add(pgid)
    else:
        groups.discard(pgid)
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
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
                        [sys.executable, "-I", "-S", "-c", SCRIPT],
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

    def watch(self, pgid: int) -> None:
        self._send(f"+{pgid}\n")

    def forget(self, pgid: int) -> None:
        self._send(f"-{pgid}\n")

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
