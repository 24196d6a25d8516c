"""Local provider (the embedded default): each worker is an agent subprocess
(`python -m hodei.agent`).

The OTP travels in the child's environment (never on its command line). HODEI_PARENT_PID asks
the agent to set PR_SET_PDEATHSIG on itself (see agent.lifeline) so that none outlives the
server, even after kill -9; a pid file per agent lets the next server start remove any that
slipped through (reconcile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import psutil

from hodei.ports import WorkerLaunch

log = logging.getLogger(__name__)

ExitHandler = Callable[[str, int], None]  # worker id, return code


class LocalProvider:
    name = "local"

    def __init__(self, run_dir: Path, on_exit: ExitHandler, stop_grace_s: float = 10.0) -> None:
        self._run_dir = run_dir
        self._on_exit = on_exit
        self._stop_grace_s = stop_grace_s
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._watchers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._run_dir.mkdir(parents=True, exist_ok=True)
        for pidfile in self._run_dir.glob("*.pid"):
            self._kill_leftover(pidfile)

    def _kill_leftover(self, pidfile: Path) -> None:
        try:
            pid, started = (float(x) for x in pidfile.read_text().split())
            proc = psutil.Process(int(pid))
            # Only a process we started: same pid *and* same start time (pids get reused).
            if abs(proc.create_time() - started) < 1.0:
                log.warning("removing leftover local worker (pid %d)", int(pid))
                proc.kill()
        except (ValueError, OSError, psutil.Error):
            pass
        pidfile.unlink(missing_ok=True)

    async def provision(self, launch: WorkerLaunch) -> None:
        env = dict(os.environ)
        env.update(
            HODEI_TOKEN=launch.otp,
            HODEI_SERVER_URL=launch.server_url,
            HODEI_PARENT_PID=str(os.getpid()),
        )
        # Without TLS settings from the server, none inherited from its environment either.
        env.update({"HODEI_CA": "", "HODEI_CA_PEM": "", "HODEI_ENROLL_URL": "", **launch.env})
        # The bare agent module, not the CLI: it connects ~140 ms sooner (see agent.__main__).
        args = [sys.executable, "-m", "hodei.agent", "--slots", str(launch.slots)]
        for key, value in launch.labels.items():
            args += ["--label", f"{key}={value}"]
        proc = await asyncio.create_subprocess_exec(
            *args,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # terminal signals reach the server, which stops us in order
        )
        self._procs[launch.worker_id] = proc
        with contextlib.suppress(OSError, psutil.Error):
            started = psutil.Process(proc.pid).create_time()
            (self._run_dir / f"{launch.worker_id}.pid").write_text(f"{proc.pid} {started}")
        task = asyncio.create_task(self._watch(launch.worker_id, proc))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _watch(self, worker_id: str, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        self._procs.pop(worker_id, None)
        (self._run_dir / f"{worker_id}.pid").unlink(missing_ok=True)
        self._on_exit(worker_id, code)

    async def terminate(self, worker_id: str) -> None:
        proc = self._procs.get(worker_id)
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), self._stop_grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def stop(self) -> None:
        await asyncio.gather(*(self.terminate(w) for w in list(self._procs)))
        await asyncio.gather(*self._watchers, return_exceptions=True)

    def running(self) -> list[str]:
        return list(self._procs)
