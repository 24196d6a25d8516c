"""What one job used: CPU seconds (user + system), the peak of its memory, bytes read and written.

From the job's own cgroup when it has one: v2 `cpu.stat` (usage_usec), `memory.peak` (Linux
5.19; else `memory.current` sampled while it runs) and `io.stat` (rbytes, wbytes); v1
`cpuacct.usage`, `memory.max_usage_in_bytes` and `blkio.throttle.io_service_bytes`, where the
containment's hierarchy has those controllers. What the cgroup does not give comes from the
job's processes: the rusage of its first process, reaped by the runner (wait4: CPU time and
largest RSS of it and every descendant it waited for, blocks read and written), and the sum of
the RSS high-water marks (VmHWM) of its processes (those of its cgroup, else its process tree)
and their I/O counters, sampled while it runs. The rusage's largest RSS counts only when above
the agent's own: a child started by vfork (as Popen does) is charged its parent's RSS at exec.

Cheap on the hot path: the cgroup files are read once, when the job has ended (three small
files); sampling starts only when the cgroup gives no peak, runs in a thread of the loop's
executor (never on the loop itself), one sample at a time, FIRST_S after the start then at
twice the last gap up to every INTERVAL_S, so a job shorter than FIRST_S is never sampled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
from concurrent.futures import Future
from dataclasses import dataclass

import psutil

from hodei.domain.attempts import ResourceUse

INTERVAL_S = 0.5
FIRST_S = 0.05
BLOCK = 512  # rusage's ru_inblock / ru_oublock unit


# ---- the files, as text --------------------------------------------------------------------


def cpu_stat_seconds(text: str) -> float | None:
    """cgroup v2 cpu.stat: usage_usec in seconds."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec" and value.strip().isdigit():
            return int(value) / 1e6
    return None


def io_stat_bytes(text: str) -> tuple[int, int] | None:
    """cgroup v2 io.stat (`MAJ:MIN rbytes=N wbytes=N rios=N ...` per device): (read, written)
    over every device; None when no line names them."""
    read = written = 0
    seen = False
    for line in text.splitlines():
        for item in line.split()[1:]:
            key, _, value = item.partition("=")
            if key in ("rbytes", "wbytes") and value.isdigit():
                seen = True
                if key == "rbytes":
                    read += int(value)
                else:
                    written += int(value)
    return (read, written) if seen else None


def blkio_bytes(text: str) -> tuple[int, int] | None:
    """cgroup v1 blkio.throttle.io_service_bytes (`MAJ:MIN Read N` ... per device, then
    `Total N`): (read, written) over every device."""
    read = written = 0
    seen = False
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            if parts[1] == "Read":
                read += int(parts[2])
                seen = True
            elif parts[1] == "Write":
                written += int(parts[2])
                seen = True
    return (read, written) if seen else None


def int_value(text: str) -> int | None:
    """A file holding one number (memory.peak, memory.current, cpuacct.usage...); None for
    anything else ("max", empty)."""
    text = text.strip()
    return int(text) if text.isdigit() else None


def _hwm(pid: int) -> int | None:
    """The RSS high-water mark of a live process (/proc/PID/status VmHWM), in bytes."""
    text = _read(f"/proc/{pid}/status")
    for line in (text or "").splitlines():
        if line.startswith("VmHWM:"):
            parts = line.split()
            return int(parts[1]) * 1024 if len(parts) >= 2 and parts[1].isdigit() else None
    return None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class CgroupFiles:
    """Where a cgroup keeps each figure (v2 or v1 names)."""

    cpu: str
    peak: str
    current: str
    io: str
    v2: bool

    @classmethod
    def of(cls, path: str, v2: bool) -> CgroupFiles:
        def at(name: str) -> str:
            return os.path.join(path, name)

        if v2:
            return cls(at("cpu.stat"), at("memory.peak"), at("memory.current"), at("io.stat"), True)
        return cls(
            at("cpuacct.usage"),
            at("memory.max_usage_in_bytes"),
            at("memory.usage_in_bytes"),
            at("blkio.throttle.io_service_bytes"),
            False,
        )

    def cpu_seconds(self) -> float | None:
        text = _read(self.cpu)
        if text is None:
            return None
        if self.v2:
            return cpu_stat_seconds(text)
        ns = int_value(text)
        return ns / 1e9 if ns is not None else None

    def peak_memory(self) -> int | None:
        text = _read(self.peak)
        return int_value(text) if text is not None else None

    def current_memory(self) -> int | None:
        text = _read(self.current)
        return int_value(text) if text is not None else None

    def io_bytes(self) -> tuple[int, int] | None:
        text = _read(self.io)
        if text is None:
            return None
        return io_stat_bytes(text) if self.v2 else blkio_bytes(text)


# ---- one job -------------------------------------------------------------------------------


class JobMeter:
    """Measures one job: `start` once it runs, `exited` with its first process's rusage, then
    `finish` before its cgroup is removed."""

    def __init__(self, cgroup: str = "", v2: bool = True, interval_s: float = INTERVAL_S) -> None:
        self._files = CgroupFiles.of(cgroup, v2) if cgroup else None
        self._cgroup = cgroup
        self._interval_s = interval_s
        self._gap_s = min(FIRST_S, interval_s)
        self._pid = 0
        self._rusage: resource.struct_rusage | None = None
        self._peak_rss = 0  # the largest sum of RSS sampled
        self._peak_current = 0  # the largest memory.current sampled
        self._io: dict[int, tuple[int, int]] = {}  # pid -> its last I/O counters
        self._timer: asyncio.TimerHandle | None = None
        self._sampling: asyncio.Future[None] | Future[None] | None = None
        self._done = False
        self._own_maxrss = 0

    def start(self, pid: int) -> None:
        self._pid = pid
        if self._files is not None and os.path.exists(self._files.peak):
            return  # the kernel keeps the peak: nothing to sample
        self._timer = asyncio.get_running_loop().call_later(self._gap_s, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._done:
            return
        loop = asyncio.get_running_loop()
        sampling = loop.run_in_executor(None, self.sample)
        self._sampling = sampling
        sampling.add_done_callback(self._sampled)

    def _sampled(self, sampling: asyncio.Future[None]) -> None:
        self._sampling = None
        if not sampling.cancelled():
            sampling.exception()  # sample() catches what it expects; nothing is left unread
        if not self._done:
            self._gap_s = min(self._gap_s * 2, self._interval_s)
            self._timer = asyncio.get_running_loop().call_later(self._gap_s, self._tick)

    def _processes(self) -> list[psutil.Process]:
        if self._cgroup:
            text = _read(os.path.join(self._cgroup, "cgroup.procs")) or ""
            out = []
            for pid in text.split():
                with contextlib.suppress(psutil.Error, ValueError):
                    out.append(psutil.Process(int(pid)))
            return out
        try:
            first = psutil.Process(self._pid)
            return [first, *first.children(recursive=True)]
        except psutil.Error:
            return []

    def sample(self) -> None:
        """One reading of the job's memory (and its processes' I/O counters); in a thread."""
        if self._files is not None:
            current = self._files.current_memory()
            if current is not None:
                self._peak_current = max(self._peak_current, current)
        rss = 0
        for proc in self._processes():
            hwm = _hwm(proc.pid)
            if hwm is None:
                with contextlib.suppress(psutil.Error):
                    hwm = int(proc.memory_info().rss)
            rss += hwm or 0
            with contextlib.suppress(psutil.Error, AttributeError, OSError):
                counters = proc.io_counters()  # AccessDenied where not permitted
                self._io[proc.pid] = (counters.read_bytes, counters.write_bytes)
        self._peak_rss = max(self._peak_rss, rss)

    def exited(self, rusage: resource.struct_rusage | None, own_maxrss: int | None = None) -> None:
        """The first process's rusage; `own_maxrss` (KiB): the agent's own (read here when
        None), below which its largest RSS may be the agent's, charged to it by vfork."""
        self._rusage = rusage
        if own_maxrss is None:
            own_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self._own_maxrss = own_maxrss

    def finish(self) -> ResourceUse | None:
        """What the job used; None when nothing could be measured. Call once it has ended."""
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        ru = self._rusage
        files = self._files
        cpu = files.cpu_seconds() if files is not None else None
        if cpu is None and ru is not None:
            cpu = ru.ru_utime + ru.ru_stime
        peak = files.peak_memory() if files is not None else None
        if peak is None:
            sampled = [self._peak_current, self._peak_rss]
            if ru is not None and ru.ru_maxrss > self._own_maxrss:
                sampled.append(ru.ru_maxrss * 1024)  # KiB on Linux
            peak = max(sampled) if any(sampled) else None
        if cpu is None or peak is None:
            return None
        io = files.io_bytes() if files is not None else None
        if io is None and (ru is not None or self._io):
            read = sum(r for r, _ in self._io.values())
            written = sum(w for _, w in self._io.values())
            if ru is not None:
                read = max(read, ru.ru_inblock * BLOCK)
                written = max(written, ru.ru_oublock * BLOCK)
            io = (read, written)
        return ResourceUse(cpu, peak, *(io if io is not None else (None, None)))
