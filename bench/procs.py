"""Child processes of the benchmark: started here, watched, and always stopped by pid.

Every process the bench starts goes through `Procs.spawn`, which remembers it. `stop_all()`
(run from a `finally`, and on SIGTERM/SIGINT) stops each one by its pid: SIGTERM, a grace
period, then SIGKILL for it and for any descendant it left behind (recorded before the stop).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_mb(pid: int) -> float:
    """Resident set size of one process, in MiB (0 when it is gone)."""
    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.Error:
        return 0.0


def _tree_mb(pid: int, size: Callable[[psutil.Process], int]) -> float:
    """`size` (bytes) summed over a process and all its descendants, in MiB (0 when it is
    gone); a process that ends meanwhile, or whose `size` this platform lacks, counts 0."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error, AttributeError):
            total += size(proc)
    return total / 2**20


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and all its descendants, in MiB (shared pages counted in each)."""
    return _tree_mb(pid, lambda proc: proc.memory_info().rss)


def tree_pss_mb(pid: int) -> float:
    """Proportional set size of a process tree in MiB (shared pages split between sharers)."""
    return _tree_mb(pid, lambda proc: proc.memory_full_info().pss)


@dataclass
class Child:
    """One started process, its output lines (kept in memory) and when it was spawned."""

    name: str
    proc: subprocess.Popen[bytes]
    spawned_at: float  # time.monotonic() just before the spawn
    lines: list[str] = field(default_factory=list)
    pump: threading.Thread | None = None
    _watchers: list[tuple[Callable[[str], bool], threading.Event, list[float]]] = field(
        default_factory=list
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_line(self, match: Callable[[str], bool], timeout: float) -> tuple[str, float] | None:
        """Wait for an output line (already seen or to come) that `match`es; return it and the
        time.monotonic() at which it was read, or None after `timeout` or if the process ended."""
        event = threading.Event()
        stamp: list[float] = []
        with self._lock:
            for line in self.lines:
                if match(line):
                    return line, time.monotonic()
            self._watchers.append((match, event, stamp))
        deadline = time.monotonic() + timeout
        while not event.wait(0.05):
            if time.monotonic() > deadline or (not self.alive() and not event.is_set()):
                return None
        with self._lock:
            for line in reversed(self.lines):
                if match(line):
                    return line, stamp[0]
        return None

    def _feed(self, line: str) -> None:
        now = time.monotonic()
        with self._lock:
            self.lines.append(line)
            if len(self.lines) > 5000:
                del self.lines[:1000]
            for match, event, stamp in list(self._watchers):
                if match(line):
                    stamp.append(now)
                    event.set()
                    self._watchers.remove((match, event, stamp))

    def tail(self, n: int = 30) -> str:
        with self._lock:
            return "".join(self.lines[-n:])


def _pump(child: Child, stream: IO[bytes]) -> None:
    for raw in stream:
        child._feed(raw.decode(errors="replace"))
    stream.close()


class Procs:
    """The processes this run started; see the module docstring."""

    def __init__(self, log: Callable[[str], None] = print) -> None:
        self.children: list[Child] = []
        self._log = log

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        capture: bool = True,
        new_session: bool = True,
    ) -> Child:
        """Start `argv`; with `capture`, stdout and stderr (merged) are read line by line."""
        started = time.monotonic()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if capture else subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=new_session,  # a Ctrl-C at the terminal reaches only the bench
        )
        child = Child(name, proc, started)
        self.children.append(child)
        if capture and proc.stdout is not None:
            child.pump = threading.Thread(target=_pump, args=(child, proc.stdout), daemon=True)
            child.pump.start()
        return child

    def stop(self, child: Child, grace: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
        """Stop one child by pid (its recorded descendants too); return its exit code."""
        descendants: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            descendants = psutil.Process(child.pid).children(recursive=True)
        if child.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, sig)
            try:
                child.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._log(f"  {child.name} (pid {child.pid}) did not stop in {grace:g}s: SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
                child.proc.wait(5)
        # Whatever it started and did not take down with it (psutil checks pid reuse).
        _, alive = psutil.wait_procs(descendants, timeout=2.0)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if child.pump is not None:
            child.pump.join(2.0)
        if child in self.children:
            self.children.remove(child)
        return child.proc.returncode

    def stop_all(self) -> None:
        for child in reversed(list(self.children)):
            try:
                self.stop(child, grace=10.0)
            except Exception as exc:  # keep stopping the others
                self._log(f"  could not stop {child.name} (pid {child.pid}): {exc!r}")


def install_signal_handlers() -> None:
    """SIGTERM behaves like Ctrl-C (KeyboardInterrupt), so `finally` blocks run."""

    def _raise(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _raise)
