"""The worker's usage from the right place: the agent's own cgroup (fake v1 and v2 trees in
temp dirs) when it is a container's, else the host's; readings cached for a TTL."""

from __future__ import annotations

from pathlib import Path

from hodei.agent.metrics import OwnCgroup, UsageReader, own_cgroup, read_cgroup

GIB = 1 << 30
V2_MOUNTS = [("/sys/fs/cgroup", "cgroup2", "rw", "/")]
V1_MOUNTS = [
    ("/sys/fs/cgroup/memory", "cgroup", "rw,memory", "/"),
    ("/sys/fs/cgroup/cpu,cpuacct", "cgroup", "rw,cpu,cpuacct", "/"),
    ("/sys/fs/cgroup/pids", "cgroup", "rw,pids", "/"),
]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_own_cgroup_v2_and_the_agent_s_leaf() -> None:
    assert own_cgroup("0::/kubepods/pod1/c1\n", V2_MOUNTS) == OwnCgroup(
        "/sys/fs/cgroup/kubepods/pod1/c1", "/sys/fs/cgroup/kubepods/pod1/c1", True
    )
    # Moved into its leaf beside the job cgroups: the container is the leaf's parent.
    assert own_cgroup("0::/hodei-agent\n", V2_MOUNTS) == OwnCgroup(
        "/sys/fs/cgroup", "/sys/fs/cgroup", True
    )


def test_own_cgroup_v1_uses_the_memory_and_cpuacct_hierarchies() -> None:
    text = "12:pids:/docker/abc\n4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n"
    assert own_cgroup(text, V1_MOUNTS) == OwnCgroup(
        "/sys/fs/cgroup/memory/docker/abc", "/sys/fs/cgroup/cpu,cpuacct/docker/abc", False
    )
    # Docker without a cgroup namespace mounts the container's cgroup as the mount's root.
    rooted = [(p, t, o, "/docker/abc") for p, t, o, _ in V1_MOUNTS]
    assert own_cgroup(text, rooted) == OwnCgroup(
        "/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu,cpuacct", False
    )
    assert own_cgroup("garbage", V1_MOUNTS) is None


def _v2(tmp: Path, current: int, limit: str, usage_usec: int) -> OwnCgroup:
    (tmp / "memory.current").write_text(f"{current}\n")
    (tmp / "memory.max").write_text(f"{limit}\n")
    (tmp / "cpu.stat").write_text(f"usage_usec {usage_usec}\nuser_usec 1\n")
    return OwnCgroup(str(tmp), str(tmp), True)


def _v1(tmp: Path, current: int, limit: int, usage_ns: int) -> OwnCgroup:
    memory, cpu = tmp / "memory", tmp / "cpuacct"
    memory.mkdir(exist_ok=True)
    cpu.mkdir(exist_ok=True)
    (memory / "memory.usage_in_bytes").write_text(f"{current}\n")
    (memory / "memory.limit_in_bytes").write_text(f"{limit}\n")
    (cpu / "cpuacct.usage").write_text(f"{usage_ns}\n")
    return OwnCgroup(str(memory), str(cpu), False)


def test_read_v2_and_v1_files(tmp_path: Path) -> None:
    v2 = read_cgroup(_v2(tmp_path, 300 << 20, "536870912", 2_500_000))
    assert (v2.memory_bytes, v2.memory_limit, v2.cpu_seconds) == (300 << 20, 512 << 20, 2.5)
    unlimited = read_cgroup(_v2(tmp_path, 1, "max", 0))
    assert unlimited.memory_limit is None
    v1 = read_cgroup(_v1(tmp_path, 100 << 20, 256 << 20, 4_000_000_000))
    assert (v1.memory_bytes, v1.memory_limit, v1.cpu_seconds) == (100 << 20, 256 << 20, 4.0)


def test_a_container_reports_its_cgroup_cached_for_the_ttl(tmp_path: Path) -> None:
    clock = Clock()
    where = _v2(tmp_path, 300 << 20, str(512 << 20), 0)
    reader = UsageReader(where, host_memory=64 * GIB, cpus=2.0, ttl_s=1.0, clock=clock)
    first = reader.usage()
    assert (first.memory_bytes, first.memory_total_bytes) == (300 << 20, 512 << 20)
    assert first.cpu_percent == 0.0  # no earlier reading to compare with
    _v2(tmp_path, 400 << 20, str(512 << 20), 1_000_000)  # 1 CPU second more
    clock.now += 0.5
    assert reader.usage().memory_bytes == 300 << 20  # within the TTL: the cached reading
    clock.now += 0.5
    second = reader.usage()
    assert second.memory_bytes == 400 << 20
    assert second.cpu_percent == 50.0  # 1 CPU second in 1 s, of 2 CPUs


def test_a_v1_container_too(tmp_path: Path) -> None:
    clock = Clock()
    where = _v1(tmp_path, 100 << 20, 256 << 20, 0)
    reader = UsageReader(where, host_memory=64 * GIB, cpus=1.0, ttl_s=1.0, clock=clock)
    assert reader.usage().memory_total_bytes == 256 << 20
    _v1(tmp_path, 120 << 20, 256 << 20, 250_000_000)
    clock.now += 1.0
    later = reader.usage()
    assert later.memory_bytes == 120 << 20 and later.cpu_percent == 25.0


def test_without_a_limit_the_host_s_usage_is_reported(tmp_path: Path) -> None:
    # A cgroup without a memory limit (a systemd slice on a host): not a container's.
    where = _v2(tmp_path, 5, "max", 0)
    reader = UsageReader(where, host_memory=64 * GIB, cpus=1.0)
    host = reader.usage()
    assert host.memory_bytes != 5 and host.memory_total_bytes > 0
