"""What this worker offers (Capacity) and what it uses now (ResourceUsage), via psutil.

Inside a container the host's numbers would overstate what the agent may use, so the cgroup
limits win when they are lower: v2 (cpu.max, memory.max) or, on hosts still on cgroup v1 (where
Docker mounts the container's own cgroup at /sys/fs/cgroup/<controller>), cpu.cfs_quota_us and
memory.limit_in_bytes.

Usage comes from the same place: when the agent's own cgroup (/proc/self/cgroup, under its
mount; the parent of the `hodei-agent` leaf the job cgroups made it move into) has a memory
limit below the host's memory or a CPU quota, the agent runs in a container or pod, and the
heartbeat reports that cgroup's memory (v2 memory.current of memory.max; v1
memory.usage_in_bytes of memory.limit_in_bytes) and CPU (v2 cpu.stat usage_usec; v1
cpuacct.usage, as a percent of the CPUs it may use), not the host's. Readings are cached for
USAGE_TTL_S, so a heartbeat never waits on them twice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from hodei._proto.hodei.v1 import worker_pb2
from hodei.agent.cgroups import _mounts as cgroup_mounts
from hodei.agent.cgroups import _under as under
from hodei.agent.job_usage import cpu_stat_seconds, int_value

CGROUP = Path("/sys/fs/cgroup")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _cgroup_cpus() -> float | None:
    quota, _, period = _read(CGROUP / "cpu.max").partition(" ")
    if not quota:  # cgroup v1 (a quota of -1 means no limit)
        quota = _read(CGROUP / "cpu" / "cpu.cfs_quota_us")
        period = _read(CGROUP / "cpu" / "cpu.cfs_period_us")
    if not quota.isdigit() or not period.isdigit() or int(period) == 0:
        return None
    return int(quota) / int(period)


def _cgroup_memory() -> int | None:
    value = _read(CGROUP / "memory.max") or _read(CGROUP / "memory/memory.limit_in_bytes")
    return int(value) if value.isdigit() else None


def cpu_count() -> float:
    try:
        cpus = float(len(os.sched_getaffinity(0)))  # honours taskset / cpusets
    except AttributeError:  # not Linux
        cpus = float(psutil.cpu_count() or 1)
    limit = _cgroup_cpus()
    return min(cpus, limit) if limit else cpus


def memory_total() -> int:
    total = int(psutil.virtual_memory().total)
    limits = [n for n in (_cgroup_memory(), _own_memory_limit()) if n]
    return min([total, *limits])


def _own_memory_limit() -> int | None:
    """The memory limit of the agent's own cgroup (below the mount's root, e.g. a pod's)."""
    try:
        with open("/proc/self/cgroup") as f:
            where = own_cgroup(f.read(), cgroup_mounts())
    except OSError:
        return None
    return read_cgroup(where).memory_limit if where is not None else None


def capacity(slots: int) -> worker_pb2.Capacity:
    """What the agent registers with: cpus, memory and how many jobs it runs at once."""
    psutil.cpu_percent(interval=None)  # primes the counter, so the first usage() is meaningful
    return worker_pb2.Capacity(cpus=cpu_count(), memory_bytes=memory_total(), slots=slots)


USAGE_TTL_S = 1.0
AGENT_LEAF = "hodei-agent"  # hodei.agent.cgroups: the agent's own leaf beside its jobs'


@dataclass(frozen=True, slots=True)
class OwnCgroup:
    """The directories of the agent's cgroup: v2 one for both, v1 the memory and cpuacct ones."""

    memory: str
    cpu: str
    v2: bool


def own_cgroup(proc_cgroup: str, mounts: list[tuple[str, str, str, str]]) -> OwnCgroup | None:
    """Where the cgroup named in /proc/self/cgroup's text is, given the cgroup mounts
    ((point, fstype, super options, root), as hodei.agent.cgroups reads them); v1's memory
    and cpuacct controllers first (a hybrid host keeps them there), else v2."""
    paths: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for name in parts[1].split(",") if parts[1] else [""]:
                paths[name] = parts[2]

    def where(fstype: str, controller: str) -> str | None:
        for point, kind, options, root in mounts:
            if kind != fstype:
                continue
            if fstype == "cgroup" and controller not in options.split(","):
                continue
            path = os.path.normpath(under(point, root, paths[controller]))
            if os.path.basename(path) == AGENT_LEAF:
                path = os.path.dirname(path)
            return path
        return None

    if "memory" in paths and "cpuacct" in paths:
        memory, cpu = where("cgroup", "memory"), where("cgroup", "cpuacct")
        if memory and cpu:
            return OwnCgroup(memory, cpu, False)
    if "" in paths and (v2 := where("cgroup2", "")):
        return OwnCgroup(v2, v2, True)
    return None


@dataclass(frozen=True, slots=True)
class CgroupReading:
    memory_bytes: int | None
    memory_limit: int | None  # None: no limit
    cpu_seconds: float | None


def read_cgroup(where: OwnCgroup) -> CgroupReading:
    def text(directory: str, name: str) -> str:
        return _read(Path(directory) / name)

    if where.v2:
        current, limit = text(where.memory, "memory.current"), text(where.memory, "memory.max")
        cpu = cpu_stat_seconds(text(where.cpu, "cpu.stat"))
    else:
        current = text(where.memory, "memory.usage_in_bytes")
        limit = text(where.memory, "memory.limit_in_bytes")
        ns = int_value(text(where.cpu, "cpuacct.usage"))
        cpu = ns / 1e9 if ns is not None else None
    return CgroupReading(int_value(current), int_value(limit), cpu)


class UsageReader:
    """The heartbeat's readings, cached for `ttl_s`: the agent's cgroup's when it is a
    container's (a memory limit below `host_memory`, or a CPU quota), else the host's."""

    def __init__(
        self,
        where: OwnCgroup | None,
        *,
        host_memory: int,
        cpus: float,
        quota: bool = False,
        ttl_s: float = USAGE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._where = where
        self._host_memory = host_memory
        self._cpus = max(cpus, 0.01)
        self._quota = quota
        self._ttl_s = ttl_s
        self._clock = clock
        self._cached: worker_pb2.ResourceUsage | None = None
        self._at = 0.0
        self._cpu_mark: tuple[float, float] | None = None  # (clock, cgroup CPU seconds)

    @classmethod
    def here(cls) -> UsageReader:
        try:
            with open("/proc/self/cgroup") as f:
                where = own_cgroup(f.read(), cgroup_mounts())
        except OSError:
            where = None
        host = int(psutil.virtual_memory().total)
        return cls(where, host_memory=host, cpus=cpu_count(), quota=_cgroup_cpus() is not None)

    def usage(self) -> worker_pb2.ResourceUsage:
        now = self._clock()
        if self._cached is None or now - self._at >= self._ttl_s:
            self._cached, self._at = self._read(now), now
        result = worker_pb2.ResourceUsage()
        result.CopyFrom(self._cached)
        return result

    def _read(self, now: float) -> worker_pb2.ResourceUsage:
        reading = read_cgroup(self._where) if self._where is not None else None
        limit = reading.memory_limit if reading is not None else None
        contained = limit is not None and limit < self._host_memory
        if reading is not None and (contained or self._quota) and reading.memory_bytes is not None:
            return worker_pb2.ResourceUsage(
                cpu_percent=self._cgroup_cpu_percent(now, reading.cpu_seconds),
                memory_bytes=reading.memory_bytes,
                memory_total_bytes=limit if contained and limit else self._host_memory,
            )
        mem = psutil.virtual_memory()
        return worker_pb2.ResourceUsage(
            cpu_percent=psutil.cpu_percent(interval=None),
            memory_bytes=int(mem.total - mem.available),
            memory_total_bytes=memory_total(),
        )

    def _cgroup_cpu_percent(self, now: float, seconds: float | None) -> float:
        """CPU since the previous reading, in percent of the CPUs the cgroup may use."""
        if seconds is None:
            return 0.0
        mark, self._cpu_mark = self._cpu_mark, (now, seconds)
        if mark is None or now <= mark[0]:
            return 0.0
        share = (seconds - mark[1]) / (now - mark[0]) / self._cpus
        return max(0.0, min(100.0, share * 100.0))


_READER: UsageReader | None = None


def usage() -> worker_pb2.ResourceUsage:
    """Usage since the previous call (the container's when in one); never blocks."""
    global _READER
    if _READER is None:
        _READER = UsageReader.here()
    result = _READER.usage()
    try:
        net = psutil.net_io_counters()
        if net is not None:
            result.rx_bytes, result.tx_bytes = net.bytes_recv, net.bytes_sent
    except (OSError, RuntimeError):  # no /proc/net/dev, e.g. in some sandboxes
        pass
    try:
        disk = psutil.disk_io_counters()
        if disk is not None:
            result.disk_io_bytes = disk.read_bytes + disk.write_bytes
    except (OSError, RuntimeError):
        pass
    return result
