"""What a real job used, measured by the runner: CPU burnt in a bounded busy loop and 64 MiB
touched, in a job cgroup (v2, v1) and under the subreaper fallback. Lower bounds only."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from hodei.agent.cgroups import JobCgroups, candidates
from hodei.agent.containment import CgroupContainment, Containment, SubreaperContainment
from hodei.agent.runner import run_job
from hodei.domain.work import Assignment

# Busy until the process has used 0.3 s of CPU (bounded by CPU time, not by the clock), with
# 64 MiB written (not merely allocated: untouched pages are not resident), then a file written
# and read back.
BURN = (
    "import os, time\n"
    "block = b'x' * (64 << 20)\n"
    "while time.process_time() < 0.3:\n"
    "    pass\n"
    "with open('out.bin', 'wb') as f:\n"
    "    f.write(os.urandom(1 << 20)); f.flush(); os.fsync(f.fileno())\n"
    "print(len(block))\n"
)


def _v1() -> JobCgroups | None:
    for path, v2 in candidates():
        if not v2 and (found := JobCgroups.find(path)) is not None:
            return found
    return None


@pytest.fixture(params=["cgroup", "cgroup-v1", "subreaper"])
def containment(request: pytest.FixtureRequest) -> Iterator[Containment]:
    if request.param.startswith("cgroup"):
        cgroups = JobCgroups.find() if request.param == "cgroup" else _v1()
        if cgroups is None:
            pytest.skip(f"no writable {request.param} hierarchy for this user")
        yield CgroupContainment(cgroups)
    else:
        yield SubreaperContainment()


async def test_a_job_s_cpu_and_peak_memory_are_measured(containment: Containment) -> None:
    job = Assignment(job_id="use", attempt=1, command="python3", arguments=("-c", BURN))
    out: list[bytes] = []
    outcome = await asyncio.wait_for(
        run_job(job, lambda d: out.append(d), asyncio.Event(), containment=containment), 60
    )
    assert outcome.exit_code == 0, b"".join(out)
    assert b"".join(out).strip() == str(64 << 20).encode()
    use = outcome.usage
    assert use is not None
    assert use.cpu_seconds > 0.1
    assert use.peak_memory_bytes >= 50 << 20
    assert use.read_bytes is not None and use.written_bytes is not None


async def test_a_shell_job_counts_what_its_children_used(containment: Containment) -> None:
    # The CPU is burnt by a child the shell waits for (and a sibling in the background).
    loop = "python3 -c 'import time\nwhile time.process_time() < 0.2: pass'"
    job = Assignment(job_id="kids", attempt=1, command=f"{loop} & {loop}; wait; echo done")
    out: list[bytes] = []
    outcome = await asyncio.wait_for(
        run_job(job, lambda d: out.append(d), asyncio.Event(), containment=containment), 60
    )
    assert outcome.exit_code == 0, b"".join(out)
    assert outcome.usage is not None and outcome.usage.cpu_seconds > 0.3


async def test_a_job_that_cannot_start_reports_no_usage(containment: Containment) -> None:
    job = Assignment(job_id="none", attempt=1, command="/no/such/program", arguments=("x",))
    outcome = await run_job(job, lambda d: None, asyncio.Event(), containment=containment)
    assert outcome.exit_code == 127 and outcome.usage is None
