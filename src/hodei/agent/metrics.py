"""What this worker offers (Capacity) and what it uses now (ResourceUsage), via psutil.

Inside a container the host's numbers would overstate what the agent may use, so the cgroup
limits win when they are lower: v2 (cpu.max, memory.max) or, on hosts still on cgroup v1 (where
Docker mounts the container's own cgroup at /sys/fs/cgroup/<controller>), cpu.cfs_quota_us and
memory.limit_in_bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from hodei._proto.hodei.v1 import worker_pb2

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
    limit = _cgroup_memory()
    return min(total, limit) if limit else total


def capacity(slots: int) -> worker_pb2.Capacity:
    """What the agent registers with: cpus, memory and how many jobs it runs at once."""
    psutil.cpu_percent(interval=None)  # primes the counter, so the first usage() is meaningful
    return worker_pb2.Capacity(cpus=cpu_count(), memory_bytes=memory_total(), slots=slots)


def usage() -> worker_pb2.ResourceUsage:
    """Machine-wide usage since the previous call; never blocks (cpu_percent interval=None)."""
    mem = psutil.virtual_memory()
    result = worker_pb2.ResourceUsage(
        cpu_percent=psutil.cpu_percent(interval=None),
        memory_bytes=int(mem.total - mem.available),
        memory_total_bytes=memory_total(),
    )
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
