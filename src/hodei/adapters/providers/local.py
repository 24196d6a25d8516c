"""Local provider (the embedded default): each worker is an agent subprocess
(`python -m hodei.agent`).

The OTP travels in the child's environment (never on its command line). Agents do not die with
the server: after a crash (kill -9, the OOM killer) they keep their jobs running and reconnect
with their resume token, as remote agents do, for the server's grace period; past it they end
their jobs and exit on their own, so nothing is orphaned. A clean stop of the server stops
them (stop()).

A pid file per agent (pid and start time, in the run directory) lets the next server's start()
reconcile: an agent of the previous run that is still alive is adopted, watched through a pidfd
(it is no longer this process's child) and treated as one of ours (idle stop, stop()); one that
has not reconnected within the grace period (`connected()` was not called for it) is
terminated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from hodei.ports import WorkerLaunch

log = logging.getLogger(__name__)

ExitHandler = Callable[[str, int], None]  # worker id, return code
AdoptHandler = Callable[[str], None]  # worker id of a worker adopted from an earlier run
UNKNOWN_EXIT = -1  # the exit code of a process that is not our child is not ours to read
POLL_S = 0.5  # without pidfds: how often an adopted agent's liveness is checked


@dataclass(slots=True)
class _Adopted:
    """An agent started by an earlier run of the server: not our child."""

    pid: int
    created: float
    pidfd: int | None = None
    gone: asyncio.Event = field(default_factory=asyncio.Event)


class LocalProvider:
    name = "local"
    runs_images = False  # its agents run on this host, in no image

    def __init__(
        self,
        run_dir: Path,
        on_exit: ExitHandler,
        stop_grace_s: float = 10.0,
        *,
        grace_s: float = 30.0,
        on_adopt: AdoptHandler | None = None,
        agent_command: tuple[str, ...] = (),
    ) -> None:
        self._run_dir = run_dir
        # The bare agent module, not the CLI: it connects ~140 ms sooner (see agent.__main__);
        # or the agent executable (hodei.agent_bundle), which needs no Python.
        self._agent_command = agent_command or (sys.executable, "-m", "hodei.agent")
        self._on_exit = on_exit
        self._on_adopt = on_adopt
        self._stop_grace_s = stop_grace_s
        self._grace_s = grace_s  # how long an adopted agent has to reconnect
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._adopted: dict[str, _Adopted] = {}
        self._connected: set[str] = set()
        self._watchers: set[asyncio.Task[None]] = set()
        self._grace_timer: asyncio.Task[None] | None = None

    # ---- start: adopt what an earlier run left alive ---------------------------------------
    async def start(self) -> None:
        self._run_dir.mkdir(parents=True, exist_ok=True)
        for pidfile in self._run_dir.glob("*.pid"):
            self._reconcile(pidfile)
        if self._adopted:
            log.info(
                "adopted %d local worker(s) of an earlier run; they have %.0fs to reconnect",
                len(self._adopted),
                self._grace_s,
            )
            self._grace_timer = asyncio.create_task(self._expire_adopted())

    def _reconcile(self, pidfile: Path) -> None:
        worker_id = pidfile.stem
        try:
            pid_text, started_text = pidfile.read_text().split()
            pid, started = int(pid_text), float(started_text)
        except (ValueError, OSError):
            pidfile.unlink(missing_ok=True)
            return
        adopted = self._adopt(worker_id, pid, started)
        if adopted is None:
            pidfile.unlink(missing_ok=True)  # that agent is gone (its pid may be reused)
            return
        self._adopted[worker_id] = adopted
        if self._on_adopt is not None:
            self._on_adopt(worker_id)
        self._spawn(self._watch_adopted(worker_id, adopted))

    def _adopt(self, worker_id: str, pid: int, started: float) -> _Adopted | None:
        """The agent of the pid file if it still runs, with a pidfd on it where there are."""
        pidfd = None
        with contextlib.suppress(OSError, AttributeError):
            pidfd = os.pidfd_open(pid)  # pins the process: its pid cannot be reused under us
        try:
            # Only a process we started: same pid *and* same start time (pids get reused).
            created = psutil.Process(pid).create_time()
            alive = abs(created - started) < 1.0 and psutil.pid_exists(pid)
        except psutil.Error:
            alive = False
        if not alive:
            if pidfd is not None:
                os.close(pidfd)
            return None
        log.info("adopting local worker %s (pid %d) from an earlier run", worker_id, pid)
        return _Adopted(pid, created, pidfd)

    async def _watch_adopted(self, worker_id: str, adopted: _Adopted) -> None:
        try:
            await self._wait_gone(adopted)
        finally:
            if adopted.pidfd is not None:
                os.close(adopted.pidfd)
                adopted.pidfd = None
        adopted.gone.set()
        self._adopted.pop(worker_id, None)
        self._connected.discard(worker_id)
        (self._run_dir / f"{worker_id}.pid").unlink(missing_ok=True)
        (self._run_dir / f"{worker_id}.log").unlink(missing_ok=True)  # no exit code to judge by
        self._on_exit(worker_id, UNKNOWN_EXIT)

    async def _wait_gone(self, adopted: _Adopted) -> None:
        if adopted.pidfd is not None:  # readable once the process has ended
            loop = asyncio.get_running_loop()
            ended = asyncio.Event()
            fd = adopted.pidfd
            loop.add_reader(fd, ended.set)
            try:
                await ended.wait()
            finally:
                loop.remove_reader(fd)
            return
        while True:  # no pidfds here: poll, at a bounded interval
            if not _alive(adopted):
                return
            await asyncio.sleep(POLL_S)

    async def _expire_adopted(self) -> None:
        await asyncio.sleep(self._grace_s)
        late = [w for w in self._adopted if w not in self._connected]
        for worker_id in late:
            log.warning("local worker %s did not reconnect in time; stopping it", worker_id)
        await asyncio.gather(*(self.terminate(w) for w in late))

    def connected(self, worker_id: str) -> None:
        """A worker registered or resumed its session with the server."""
        if worker_id in self._adopted:
            self._connected.add(worker_id)

    # ---- provision -------------------------------------------------------------------------
    async def provision(self, launch: WorkerLaunch) -> None:
        env = dict(os.environ)
        env.update(HODEI_TOKEN=launch.otp, HODEI_SERVER_URL=launch.server_url)
        # Not tied to the server's life: a crashed server's agents wait for its successor.
        env.pop("HODEI_PARENT_PID", None)
        # Without TLS settings from the server, none inherited from its environment either.
        env.update({"HODEI_CA": "", "HODEI_CA_PEM": "", "HODEI_ENROLL_URL": "", **launch.env})
        args = [*self._agent_command, "--slots", str(launch.slots)]
        for key, value in launch.labels.items():
            args += ["--label", f"{key}={value}"]
        # The agent's own log goes to a file of its own, not the server's stderr: an agent
        # outlives a crashed server, whose pipe then has no reader.
        log_path = self._run_dir / f"{launch.worker_id}.log"
        agent_log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = await asyncio.create_subprocess_exec(
                *args,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=agent_log,
                stderr=agent_log,
                start_new_session=True,  # terminal signals reach the server, which stops us
            )
        finally:
            os.close(agent_log)
        self._procs[launch.worker_id] = proc
        with contextlib.suppress(OSError, psutil.Error):
            started = psutil.Process(proc.pid).create_time()
            (self._run_dir / f"{launch.worker_id}.pid").write_text(f"{proc.pid} {started}")
        self._spawn(self._watch(launch.worker_id, proc))

    async def _watch(self, worker_id: str, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        self._procs.pop(worker_id, None)
        (self._run_dir / f"{worker_id}.pid").unlink(missing_ok=True)
        self._keep_log(worker_id, code)
        self._on_exit(worker_id, code)

    def _keep_log(self, worker_id: str, code: int) -> None:
        """An agent's log is kept only when it failed (and the server's log says where)."""
        path = self._run_dir / f"{worker_id}.log"
        if code in (0, -signal.SIGTERM):
            path.unlink(missing_ok=True)
        elif path.exists():
            log.warning("worker %s exited with code %d; its log: %s", worker_id, code, path)

    # ---- terminate and stop ----------------------------------------------------------------
    async def terminate(self, worker_id: str) -> None:
        adopted = self._adopted.get(worker_id)
        if adopted is not None:
            await self._terminate_adopted(adopted)
            return
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

    async def _terminate_adopted(self, adopted: _Adopted) -> None:
        if adopted.gone.is_set():
            return
        _signal(adopted, signal.SIGTERM)
        try:
            await asyncio.wait_for(adopted.gone.wait(), self._stop_grace_s)
        except TimeoutError:
            _signal(adopted, signal.SIGKILL)
            await adopted.gone.wait()

    async def stop(self) -> None:
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            await asyncio.gather(self._grace_timer, return_exceptions=True)
        await asyncio.gather(*(self.terminate(w) for w in self.running()))
        await asyncio.gather(*self._watchers, return_exceptions=True)

    def running(self) -> list[str]:
        return [*self._procs, *self._adopted]

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)


def _alive(adopted: _Adopted) -> bool:
    """Whether the adopted process still runs (the same one: pids get reused)."""
    try:
        proc = psutil.Process(adopted.pid)
        same = bool(proc.create_time() == adopted.created)
        return same and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal(adopted: _Adopted, sig: signal.Signals) -> None:
    with contextlib.suppress(OSError):
        if adopted.pidfd is not None:
            signal.pidfd_send_signal(adopted.pidfd, sig)
        elif _alive(adopted):
            os.kill(adopted.pid, sig)
