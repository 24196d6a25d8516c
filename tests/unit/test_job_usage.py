"""What a job used, read from its cgroup's files (given here as text, or in a fake cgroup
directory) and from its processes' rusage."""

from __future__ import annotations

import resource
from pathlib import Path

from hodei.agent.job_usage import (
    JobMeter,
    blkio_bytes,
    cpu_stat_seconds,
    int_value,
    io_stat_bytes,
)

CPU_STAT = """usage_usec 1534210
user_usec 1200000
system_usec 334210
nr_periods 0
nr_periods 0
"""
IO_STAT = """8:0 rbytes=4096 wbytes=1048576 rios=1 wios=256 dbytes=0 dios=0
259:0 rbytes=8192 wbytes=0 rios=2 wios=0 dbytes=0 dios=0
"""
BLKIO = """8:0 Read 4096
8:0 Write 1048576
8:0 Sync 0
8:0 Async 1052672
8:0 Total 1052672
259:0 Read 8192
259:0 Write 0
Total 1060864
"""


def test_cpu_stat_gives_usage_in_seconds() -> None:
    assert cpu_stat_seconds(CPU_STAT) == 1.53421
    assert cpu_stat_seconds("usage_usec 0\n") == 0.0
    assert cpu_stat_seconds("user_usec 5\n") is None
    assert cpu_stat_seconds("") is None


def test_io_stat_sums_every_device() -> None:
    assert io_stat_bytes(IO_STAT) == (12288, 1048576)
    assert io_stat_bytes("") is None  # no device has done I/O yet: unknown, not zero
    assert io_stat_bytes("8:0 rios=1\n") is None


def test_v1_blkio_sums_reads_and_writes_not_totals() -> None:
    assert blkio_bytes(BLKIO) == (12288, 1048576)
    assert blkio_bytes("Total 0\n") is None


def test_single_numbers() -> None:
    assert int_value("73400320\n") == 73400320
    assert int_value("max\n") is None
    assert int_value("") is None


def _rusage(utime: float, stime: float, maxrss_kib: int, inblock: int, oublock: int) -> object:
    fields = [0.0] * 16
    fields[0], fields[1], fields[2] = utime, stime, maxrss_kib
    fields[9], fields[10] = inblock, oublock
    return resource.struct_rusage(fields)


def test_a_v2_cgroup_with_a_peak_is_read_once_at_the_end(tmp_path: Path) -> None:
    (tmp_path / "cpu.stat").write_text(CPU_STAT)
    (tmp_path / "memory.peak").write_text("73400320\n")
    (tmp_path / "io.stat").write_text(IO_STAT)
    meter = JobMeter(str(tmp_path), v2=True)
    meter.exited(_rusage(9.0, 9.0, 1, 1, 1))  # type: ignore[arg-type]
    use = meter.finish()
    assert use is not None  # the cgroup's figures win over the first process's
    assert (use.cpu_seconds, use.peak_memory_bytes) == (1.53421, 73400320)
    assert (use.read_bytes, use.written_bytes) == (12288, 1048576)


def test_a_v1_cgroup_is_read_by_its_own_names(tmp_path: Path) -> None:
    (tmp_path / "cpuacct.usage").write_text("2500000000\n")
    (tmp_path / "memory.max_usage_in_bytes").write_text("1048576\n")
    (tmp_path / "blkio.throttle.io_service_bytes").write_text(BLKIO)
    use = JobMeter(str(tmp_path), v2=False).finish()
    assert use is not None
    assert (use.cpu_seconds, use.peak_memory_bytes) == (2.5, 1048576)
    assert (use.read_bytes, use.written_bytes) == (12288, 1048576)


def test_what_the_cgroup_lacks_comes_from_the_rusage_and_samples(tmp_path: Path) -> None:
    # A v2 cgroup without the memory and io controllers (a hybrid host): cpu.stat only.
    (tmp_path / "cpu.stat").write_text(CPU_STAT)
    (tmp_path / "memory.current").write_text("3000000\n")
    meter = JobMeter(str(tmp_path), v2=True)
    meter.sample()  # memory.current, and the RSS of the (no) processes in cgroup.procs
    (tmp_path / "memory.current").write_text("1000\n")
    meter.sample()
    meter.exited(_rusage(0.5, 0.25, 2048, 3, 5), 0)  # type: ignore[arg-type]
    use = meter.finish()
    assert use is not None
    assert use.cpu_seconds == 1.53421
    assert use.peak_memory_bytes == 3000000  # the sampled peak, above the rusage's 2 MiB
    assert (use.read_bytes, use.written_bytes) == (3 * 512, 5 * 512)


def test_without_a_cgroup_the_rusage_gives_cpu_and_peak() -> None:
    meter = JobMeter()
    meter.exited(_rusage(0.5, 0.25, 65536, 0, 8), 1024)  # type: ignore[arg-type]
    use = meter.finish()
    assert use is not None
    assert (use.cpu_seconds, use.peak_memory_bytes) == (0.75, 64 << 20)
    assert (use.read_bytes, use.written_bytes) == (0, 4096)


def test_a_largest_rss_below_the_agent_s_own_is_not_the_job_s() -> None:
    # vfork: the child is charged the agent's RSS at exec; not a figure of the job's.
    meter = JobMeter()
    meter.exited(_rusage(0.5, 0.25, 65536, 0, 8), 65536)  # type: ignore[arg-type]
    assert meter.finish() is None  # no peak known (never sampled): nothing reported


def test_nothing_measured_is_none() -> None:
    assert JobMeter().finish() is None
