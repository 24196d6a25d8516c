"""Run one job: in a PTY, in its own process group, in a private temp dir, with masked output.

The command rule (DESIGN.md 3): with `arguments`, [command, *arguments] is exec'd directly; a
multi-line command or one starting with #! is written to a file and executed as a script
(`set -euo pipefail` is prepended when it has no #! line); otherwise `bash -c command`.
Secrets reach the job only as environment variables and are masked in its output.

Nothing outlives a job (hodei.agent.containment): each job runs in a cgroup of its own, killed
whole when the job ends, is cancelled or times out (hodei.agent.cgroups); where no cgroup can be
made, the agent is a child subreaper and sweeps what a job orphaned. The job reaper covers the
agent's own death (hodei.agent.reaper).

Backpressure: `on_output` returns None when it takes more at once, or a future when it holds
as much as it may (the outbox's bound of unacknowledged output): the PTY is then not read until
the future is done, so the job blocks on its writes once the kernel's PTY buffer is full, and
nothing is dropped. Its timeout and cancel work as ever meanwhile. Once the job has ended, the
rest of its output is still read as room comes; if it was cancelled (or the agent is stopping),
that rest (at most the kernel's PTY buffer) is taken at once.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import fcntl
import logging
import os
import resource
import shutil
import signal
import stat
import struct
import subprocess
import tempfile
import termios
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol, TypeAlias

import psutil

from hodei.agent.containment import Containment, Jail, SubreaperContainment, choose
from hodei.agent.frozen import job_environment
from hodei.agent.job_usage import JobMeter
from hodei.agent.reaper import JobReaper
from hodei.domain.attempts import ResourceUse
from hodei.domain.job_output import JobOutput
from hodei.domain.jobs import JobSpec
from hodei.domain.work import Assignment

READ_SIZE = 64 * 1024
DRAIN_S = 0.2  # how long to wait for output still buffered in the PTY once the job ended
WINSIZE = (50, 200)  # rows, columns: wide, so tools do not wrap log lines at 80 columns
DEFAULT_MAX_OUTPUT = 100 * 1024 * 1024  # when the assignment names no output limit

log = logging.getLogger("hodei.agent")

Grace = float | Callable[[], float]
# Takes masked output; returns None, or a future to wait for before giving more (backpressure).
OnOutput: TypeAlias = "Callable[[bytes], asyncio.Future[None] | None]"


class Executor(Protocol):
    """How the agent runs one job: `run_job` for real; a benchmark may plug in another."""

    def __call__(
        self,
        assign: Assignment,
        on_output: OnOutput,
        cancel: asyncio.Event,
        *,
        grace: Grace = ...,
        on_started: Callable[[int], None] | None = ...,
    ) -> Awaitable[JobOutcome]: ...


@dataclass(slots=True)
class JobOutcome:
    exit_code: int  # 128+N when killed by signal N
    signal: int = 0
    cancelled: bool = False
    timed_out: bool = False
    error: str = ""  # set when the job could not be started
    pid: int = 0
    # What it used (hodei.agent.job_usage), once it ran: a measurement, not how it ended.
    usage: ResourceUse | None = field(default=None, compare=False)


@lru_cache(maxsize=1)
def _pdeathsig_prefix() -> tuple[str, ...]:
    """Exec prefix that sets PR_SET_PDEATHSIG=SIGKILL, so a job never outlives its agent.

    Not a preexec_fn calling prctl: Python code between fork and exec is unsafe with gRPC's
    threads (the child segfaulted in about 1 of 150 spawns here); exec'ing util-linux's
    setpriv is safe and costs about 1 ms per job.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        log.warning("setpriv (util-linux) not found: jobs may outlive a killed agent")
        return ()
    return (setpriv, "--pdeathsig", "KILL", "--")


def _check_executable(program: str, path: str | None) -> None:
    """Raise the OSError exec would give, so it reads as ours and not as the job's exit."""
    if "/" in program:
        if not os.path.exists(program):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if os.path.isdir(program) or not os.access(program, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
    elif shutil.which(program, path=path) is None:
        raise FileNotFoundError(errno.ENOENT, "command not found", program)


@lru_cache(maxsize=1)
def _shell() -> tuple[str, str]:
    """(path, strict-mode header): bash when present, else POSIX sh without pipefail."""
    bash = shutil.which("bash")
    if bash:
        return bash, "set -euo pipefail\n"
    return shutil.which("sh") or "/bin/sh", "set -eu\n"


def build_argv(assign: Assignment, workdir: str) -> list[str]:
    """The argv for a job; scripts are written to workdir first (write-execute pattern)."""
    if assign.arguments:
        return [assign.command, *assign.arguments]
    shell, header = _shell()
    if not JobSpec(command=assign.command).is_script:
        return [shell, "-c", assign.command]
    path = os.path.join(workdir, "script")
    shebang = assign.command.startswith("#!")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o700)
    with os.fdopen(fd, "w") as f:
        f.write(assign.command if shebang else header + assign.command)
    return [path] if shebang else [shell, path]


def job_env(assign: Assignment, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The job's environment: the agent's minus every HODEI_* (its credentials and config)."""
    source = job_environment(os.environ) if base is None else base
    env = {k: v for k, v in source.items() if not k.startswith("HODEI_")}
    env.update(assign.env)
    env.update(assign.secrets)
    env["HODEI_JOB_ID"] = assign.job_id
    env["HODEI_ATTEMPT"] = str(assign.attempt)
    if assign.traceparent:  # tools inside the job continue its trace (W3C Trace Context)
        env["TRACEPARENT"] = assign.traceparent
    env.setdefault("TERM", "xterm-256color")
    return env


def _open_pty() -> tuple[int, int]:
    master, slave = os.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.ONLCR  # oflag: keep "\n" as is, no "\r\n" in logs
    attrs[3] &= ~(termios.ECHO | termios.ECHONL)  # lflag: nothing is typed, nothing echoed
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *WINSIZE, 0, 0))
    os.set_blocking(master, False)
    return master, slave


class _Output:
    """Filters output (::add-mask::, masking, the output limit: domain.job_output) then hands
    it on; on_output must not block (it returns a future to wait for instead: see above)."""

    def __init__(self, secrets: Iterable[str], on_output: OnOutput, limit: int) -> None:
        self._filter = JobOutput(secrets, limit)
        self._on_output = on_output

    def write(self, data: bytes) -> asyncio.Future[None] | None:
        """Pass data on; a future when no more should be read until it is done."""
        masked = self._filter.feed(data)  # a partial secret is held here, across any pause
        return self._on_output(masked) if masked else None

    def flush(self) -> None:
        rest = self._filter.flush()
        if rest:
            self._on_output(rest)

    def mask_text(self, text: str) -> str:
        return self._filter.mask_text(text)


class _PtyReader:
    """Reads the PTY master without blocking; EIO/EOF means every slave fd is closed.

    Paused while the output's consumer has no room (the future `write` returned is not done):
    the fd is then not watched, and the job's writes block once the PTY buffer is full."""

    def __init__(self, fd: int, out: _Output) -> None:
        self._fd = fd
        self._out = out
        self._loop = asyncio.get_running_loop()
        self._eof = asyncio.Event()
        self._changed = asyncio.Event()  # paused, resumed or at EOF
        self._room: asyncio.Future[None] | None = None  # set while paused
        self._bounded = True  # False once the rest is to be taken whatever the room
        self._watching = False
        self._watch()

    def _watch(self) -> None:
        if not self._watching and not self._eof.is_set():
            self._loop.add_reader(self._fd, self._on_readable)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            self._loop.remove_reader(self._fd)
            self._watching = False

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # EIO: the slave side is closed
            data = b""
        if not data:
            self._stop()
            return
        room = self._out.write(data)
        if room is not None and not room.done() and self._bounded:
            self._pause(room)

    def _pause(self, room: asyncio.Future[None]) -> None:
        self._unwatch()
        self._room = room
        room.add_done_callback(self._on_room)
        self._changed.set()

    def _on_room(self, room: asyncio.Future[None]) -> None:
        if self._room is room:
            self._resume()

    def _resume(self) -> None:
        self._room = None
        self._watch()
        self._changed.set()

    def _stop(self) -> None:
        if not self._eof.is_set():
            self._unwatch()
            self._room = None
            self._eof.set()
            self._changed.set()

    async def drain(self, limit_s: float, cancel: asyncio.Event) -> None:
        """Once the job ended: read to EOF, waiting at most limit_s for it (a process may
        still hold the PTY). Time paused for room does not count; once `cancel` is set, the
        rest (what the kernel's PTY buffer still holds) is read without waiting for room."""
        loop = self._loop
        deadline = loop.time() + limit_s
        while not self._eof.is_set():
            room = self._room
            if room is not None:
                if cancel.is_set():
                    self._bounded = False
                    self._resume()
                    continue
                paused_at = loop.time()
                stop: asyncio.Future[Any] = asyncio.ensure_future(cancel.wait())
                try:
                    await asyncio.wait([room, stop], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                deadline += loop.time() - paused_at
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def close(self) -> None:
        if not self._eof.is_set():
            self._stop()
            with contextlib.suppress(OSError):  # take what is already buffered
                for _ in range(16):
                    data = os.read(self._fd, READ_SIZE)
                    if not data:
                        break
                    self._out.write(data)
        os.close(self._fd)
        self._out.flush()


def _kill(pgid: int, sig: int, strays: Iterable[psutil.Process] = ()) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    for proc in strays:  # descendants that left the group (setsid); psutil checks pid reuse
        with contextlib.suppress(psutil.Error):
            proc.send_signal(sig)


def _strays(pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    out = []
    for child in children:
        with contextlib.suppress(psutil.Error):
            if os.getpgid(child.pid) != pid:
                out.append(child)
    return out


class _Child:
    """A job process started with Popen (vfork, fast, no Python code in the child) and reaped
    from the event loop through a pidfd: no thread per job, and uvloop's fork() is avoided."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.pid = popen.pid
        self._popen = popen
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = self._loop.create_future()
        self.rusage: resource.struct_rusage | None = None  # once reaped through the pidfd
        try:
            self._pidfd = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):  # no pidfd (not Linux, or kernel < 5.3)
            self._pidfd = -1
            waiting = self._loop.run_in_executor(None, popen.wait)
            waiting.add_done_callback(lambda f: self._exited.set_result(f.result()))
        else:
            self._loop.add_reader(self._pidfd, self._reap)

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def _reap(self) -> None:
        # wait4(WNOHANG): the exit status and the rusage of the job (its CPU time, its largest
        # RSS, of it and of every descendant it waited for); Popen then knows its returncode.
        try:
            pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped already
            if self._popen.poll() is None:
                return
        else:
            if pid == 0:
                return
            self._popen.returncode = os.waitstatus_to_exitcode(status)
            self.rusage = rusage
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._exited.set_result(self._popen.returncode)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)


async def _terminate(proc: _Child, waiter: asyncio.Future[int], grace: Grace) -> None:
    """SIGTERM the group, then SIGKILL it if the job is still alive after the grace."""
    strays = _strays(proc.pid)
    _kill(proc.pid, signal.SIGTERM, strays)
    seconds = grace() if callable(grace) else grace
    await asyncio.wait({waiter}, timeout=max(0.0, seconds))
    if not waiter.done():
        _kill(proc.pid, signal.SIGKILL, strays)
        await waiter


async def _supervise(
    proc: _Child, cancel: asyncio.Event, timeout_s: float, grace: Grace
) -> tuple[bool, bool]:
    """Wait for the job; (cancelled, timed_out) tells why it was stopped, if it was."""
    waiter = asyncio.ensure_future(proc.wait())
    stopper = asyncio.ensure_future(cancel.wait())
    try:
        done, _ = await asyncio.wait(
            {waiter, stopper}, timeout=timeout_s or None, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter in done:
            return False, False
        cancelled = stopper in done
        await _terminate(proc, waiter, grace)
        return cancelled, not cancelled
    finally:
        waiter.cancel()
        stopper.cancel()


def _not_started(exc: Exception, out: _Output) -> JobOutcome:
    code = 126 if isinstance(exc, PermissionError) else 127
    if isinstance(exc, OSError) and exc.strerror:
        what = f"cannot run {exc.filename!r}" if exc.filename else "cannot start the job"
        message = f"hodei: {what}: {exc.strerror}"
    else:
        message = f"hodei: cannot start the job: {exc}"
    out.write(message.encode() + b"\n")
    return JobOutcome(exit_code=code, error=out.mask_text(message))


def _finished(returncode: int, pid: int, cancelled: bool, timed_out: bool) -> JobOutcome:
    if returncode < 0:
        return JobOutcome(128 - returncode, -returncode, cancelled, timed_out, pid=pid)
    return JobOutcome(returncode, 0, cancelled, timed_out, pid=pid)


REAPER = JobReaper()  # kills this agent's jobs if it dies without cleaning up


def _popen(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    slave: int,
    containment: Containment,
    jail: Jail,
) -> subprocess.Popen[bytes]:
    reaped = REAPER.ready()
    if reaped and isinstance(containment, SubreaperContainment) and REAPER.pid:
        containment.helpers.add(REAPER.pid)
    if reaped:  # before the job starts: it is covered from its first instruction
        REAPER.watch_jail(jail)
    with containment.lock:  # a sweep never sees a job half started
        popen = subprocess.Popen(
            [*jail.prefix, *argv] if reaped else [*_pdeathsig_prefix(), *jail.prefix, *argv],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=env,
            start_new_session=True,  # own session and process group: killpg reaches all of it
        )
        containment.started(jail, popen.pid)
    if reaped:
        REAPER.watch(popen.pid)  # its group id: the pid (a new session)
    return popen


async def _spawn(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    slave: int,
    containment: Containment,
    jail: Jail,
) -> _Child:
    # Popen returns once the child has exec'd: milliseconds on a busy machine, during which
    # the loop would move no other job's output. In a thread, it does (vfork and the wait
    # for the exec release the GIL).
    # Closes `slave` (only the job holds it then, so its end gives EIO), also on failure.
    loop = asyncio.get_running_loop()
    started = loop.run_in_executor(None, _popen, argv, env, cwd, slave, containment, jail)
    try:
        popen = await asyncio.shield(started)
    except asyncio.CancelledError:
        # It may still start, and still uses `slave`: close it and kill the job once done.
        started.add_done_callback(lambda f: _kill_started(f, slave, containment, jail))
        raise
    except BaseException:
        os.close(slave)
        raise
    os.close(slave)
    return _Child(popen)


def _kill_started(
    started: asyncio.Future[subprocess.Popen[bytes]],
    slave: int,
    containment: Containment,
    jail: Jail,
) -> None:
    os.close(slave)
    loop = asyncio.get_running_loop()
    if not started.cancelled() and started.exception() is None:
        popen = started.result()
        _kill(popen.pid, signal.SIGKILL)
        loop.run_in_executor(None, popen.wait)  # reap it
        REAPER.forget(popen.pid)
    _CLOSING.add(loop.create_task(_close(containment, jail)))


_CLOSING: set[asyncio.Task[None]] = set()


async def _close(containment: Containment, jail: Jail) -> None:
    """End whatever the job left (its cgroup, or a sweep), then stop watching it."""
    try:
        await containment.close(jail)
    except OSError as exc:
        log.warning("cannot clean up after job %s: %s", jail.key[0], exc)
    else:
        REAPER.forget_jail(jail)
    finally:
        task = asyncio.current_task()
        if task is not None:
            _CLOSING.discard(task)


def _open_jail(containment: Containment, assign: Assignment) -> Jail:
    try:
        return containment.open(assign.job_id, assign.attempt)
    except OSError as exc:  # e.g. the cgroup tree was removed under the agent
        log.warning("job %s runs without its cgroup: %s", assign.job_id, exc)
        return Containment().open(assign.job_id, assign.attempt)


async def _run_in_pty(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    out: _Output,
    assign: Assignment,
    cancel: asyncio.Event,
    grace: Grace,
    on_started: Callable[[int], None] | None,
    containment: Containment,
) -> JobOutcome:
    master, slave = _open_pty()
    reader: _PtyReader | None = None
    proc: _Child | None = None
    meter: JobMeter | None = None
    jail = _open_jail(containment, assign)
    try:
        try:
            proc = await _spawn(argv, env, cwd, slave, containment, jail)  # closes the slave
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            await _close(containment, jail)
            return _not_started(exc, out)
        # Read from here on (the PTY buffers until then): the job's output never comes
        # before its start is reported, though the spawn ran in a thread.
        reader = _PtyReader(master, out)
        meter = JobMeter(jail.cgroup, jail.v2)
        meter.start(proc.pid)
        if on_started is not None:
            on_started(proc.pid)
        cancelled, timed_out = await _supervise(proc, cancel, assign.timeout_s, grace)
        meter.exited(proc.rusage)
        usage = meter.finish()  # before its cgroup is removed
        _kill(proc.pid, signal.SIGKILL)  # nothing the job started is left behind
        REAPER.forget(proc.pid)
        await _close(containment, jail)  # not even what left its group
        await reader.drain(DRAIN_S, cancel)
        assert proc.returncode is not None
        outcome = _finished(proc.returncode, proc.pid, cancelled, timed_out)
        outcome.usage = usage
        return outcome
    finally:
        if meter is not None:
            meter.finish()  # stops its sampling, if we were cancelled ourselves
        if proc is not None and proc.returncode is None:  # we were cancelled ourselves
            _kill(proc.pid, signal.SIGKILL)
            REAPER.forget(proc.pid)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 1.0)  # reap it
            _CLOSING.add(asyncio.get_running_loop().create_task(_close(containment, jail)))
        if reader is not None:
            reader.close()
        else:
            os.close(master)
            out.flush()


async def run_job(
    assign: Assignment,
    on_output: OnOutput,
    cancel: asyncio.Event,
    *,
    grace: Grace = 5.0,
    on_started: Callable[[int], None] | None = None,
    base_env: Mapping[str, str] | None = None,
    containment: Containment | None = None,
) -> JobOutcome:
    """Run one job to its end and say how it ended.

    on_output gets masked output bytes (it must not block: it returns a future instead, and
    the job's output is not read until that is done); on_started gets the pid once the
    process runs. Setting `cancel` stops the job: SIGTERM to its group, SIGKILL after `grace`
    seconds (a callable is read when the cancel happens, so a CancelJob can set it). Every
    process the job started is ended with it, by `containment` (default: the agent's choice,
    hodei.agent.containment.choose).
    """
    out = _Output(assign.secrets.values(), on_output, assign.max_output_bytes or DEFAULT_MAX_OUTPUT)
    workdir = _WORKDIRS.take()  # mode 0700, private to the agent's user, empty
    try:
        env = job_env(assign, base_env)
        try:
            argv, cwd = _prepare(assign, workdir, env.get("PATH", os.defpath))
        except OSError as exc:
            outcome = _not_started(exc, out)
            out.flush()
            return outcome
        return await _run_in_pty(
            argv, env, cwd, out, assign, cancel, grace, on_started, containment or choose()
        )
    finally:
        _WORKDIRS.give_back(workdir)


class _Workdirs:
    """Empty private temp dirs for jobs. One a job left empty and unchanged is kept for the
    next job instead of removed: mkdtemp + rmtree cost ~0.2 ms of CPU per job (more on a
    filesystem mounted with `discard`), a tenth of the agent's own work for a short job.
    A dir that is not empty, or whose owner or mode changed, is removed as before."""

    MAX_SPARE = 64

    def __init__(self) -> None:
        self._spare: list[str] = []
        atexit.register(self.clear)

    def take(self) -> str:
        while self._spare:
            path = self._spare.pop()
            if _reusable(path):
                return path
            shutil.rmtree(path, ignore_errors=True)
        return tempfile.mkdtemp(prefix="hodei-job-")

    def give_back(self, path: str) -> None:
        if len(self._spare) < self.MAX_SPARE and _reusable(path):
            self._spare.append(path)
        else:
            shutil.rmtree(path, ignore_errors=True)

    def clear(self) -> None:
        while self._spare:
            shutil.rmtree(self._spare.pop(), ignore_errors=True)


def _reusable(path: str) -> bool:
    """An empty real directory of ours, mode 0700 (as mkdtemp made it)."""
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            return False
        if stat.S_IMODE(st.st_mode) != 0o700:
            return False
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except OSError:
        return False


_WORKDIRS = _Workdirs()


def _prepare(assign: Assignment, workdir: str, job_path: str) -> tuple[list[str], str]:
    """(argv, cwd); OSError when the job cannot be started."""
    cwd = assign.working_dir or workdir
    if not os.path.isdir(cwd):
        raise FileNotFoundError(errno.ENOENT, f"working directory {cwd!r} does not exist")
    if assign.arguments:
        _check_executable(assign.command, job_path)
    elif assign.command.startswith("#!"):
        interpreter = assign.command[2:].partition("\n")[0].split()
        if interpreter:
            try:
                _check_executable(interpreter[0], job_path)
            except FileNotFoundError as exc:  # e.g. #!/bin/bash in an image with only sh
                exc.strerror = (
                    "the interpreter of the script's #! line is not on this worker "
                    "(its image may lack it; a script without #! runs under bash or sh)"
                )
                raise
    return build_argv(assign, workdir), cwd
