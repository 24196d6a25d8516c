"""The job reaper: when its agent's pipe ends, it kills every process group still listed."""

from __future__ import annotations

import subprocess
import time

import psutil

from hodei.agent.reaper import JobReaper


def _group(command: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["bash", "-c", command], start_new_session=True)


def _gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.01)
    return False


def test_the_end_of_the_pipe_kills_listed_groups_whole_and_spares_forgotten_ones() -> None:
    reaper = JobReaper()
    assert reaper.ready()
    listed = _group("sleep 301 & sleep 302; wait")
    forgotten = _group("sleep 303")
    try:
        time.sleep(0.2)  # both shells have started their sleeps
        background = [p.pid for p in psutil.Process(listed.pid).children()]
        assert len(background) == 2
        reaper.watch(listed.pid)
        reaper.watch(forgotten.pid)
        reaper.forget(forgotten.pid)
        reaper.close()  # what the agent's death does to the pipe
        listed.wait(5)
        assert all(_gone(pid) for pid in background)  # the whole group, not just the shell
        assert forgotten.poll() is None
    finally:
        for proc in (listed, forgotten):
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
