"""Nothing outlives a job: processes that setsid, double-fork or ignore SIGTERM are ended with
the job, on its end, cancel and timeout, and when its agent is killed; both in a cgroup and
with the subreaper fallback. Real processes, found by a unique marker in their command line."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
from proc_scan import with_marker

from hodei.agent.cgroups import JobCgroups, candidates
from hodei.agent.containment import (
    CgroupContainment,
    Containment,
    SubreaperContainment,
)
from hodei.agent.runner import JobOutcome, run_job
from hodei.domain.work import Assignment

_SEQ = itertools.count(1)

ESCAPES = {
    "setsid-background": "setsid sleep {m} >/dev/null 2>&1 </dev/null & sleep 0.5; echo spawned",
    "setsid-fork": "setsid -f sleep {m} >/dev/null 2>&1 </dev/null; sleep 0.5; echo spawned",
    "double-fork": "( ( sleep {m} >/dev/null 2>&1 </dev/null & ) & ); sleep 0.5; echo spawned",
    "ignores-sigterm": (
        "setsid bash -c 'trap \"\" TERM; exec -a sleep sleep {m}' >/dev/null 2>&1 </dev/null &"
        " sleep 0.5; echo spawned"
    ),
}


def _marker() -> str:
    return f"{700 + next(_SEQ) % 100}.{os.getpid()}{next(_SEQ):04d}"


async def _until_none(marker: str, limit_s: float = 5) -> list[int]:
    deadline = time.monotonic() + limit_s
    while (left := with_marker(marker)) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    return left


def _cgroups() -> JobCgroups | None:
    return JobCgroups.find()


def _cgroups_v1() -> JobCgroups | None:
    for path, v2 in candidates():
        if not v2 and (found := JobCgroups.find(path)) is not None:
            return found
    return None


@pytest.fixture(params=["cgroup", "cgroup-v1", "subreaper"])
def containment(request: pytest.FixtureRequest) -> Iterator[Containment]:
    if request.param.startswith("cgroup"):
        cgroups = _cgroups() if request.param == "cgroup" else _cgroups_v1()
        if cgroups is None:
            pytest.skip(f"no writable {request.param} hierarchy for this user")
        yield CgroupContainment(cgroups)
    else:
        yield SubreaperContainment()


class Output:
    def __init__(self) -> None:
        self.data = b""

    def __call__(self, chunk: bytes) -> None:
        self.data += chunk


async def _run(
    command: str, containment: Containment, *, cancel_after: float = 0, timeout_s: float = 0
) -> JobOutcome:
    job = Assignment(job_id="esc", attempt=1, command=command, timeout_s=timeout_s)
    out, cancel = Output(), asyncio.Event()
    task = asyncio.create_task(run_job(job, out, cancel, grace=0.3, containment=containment))
    if cancel_after:
        await asyncio.sleep(cancel_after)
        cancel.set()
    return await asyncio.wait_for(task, 15)


@pytest.mark.parametrize("escape", sorted(ESCAPES))
async def test_escapes_end_with_the_job(containment: Containment, escape: str) -> None:
    marker = _marker()
    outcome = await _run(ESCAPES[escape].format(m=marker), containment)
    assert outcome.exit_code == 0
    assert await _until_none(marker) == []


@pytest.mark.parametrize("escape", sorted(ESCAPES))
async def test_escapes_end_with_a_cancel(containment: Containment, escape: str) -> None:
    marker = _marker()
    outcome = await _run(
        ESCAPES[escape].format(m=marker) + "; sleep 100", containment, cancel_after=1
    )
    assert outcome.cancelled
    assert await _until_none(marker) == []


@pytest.mark.parametrize("escape", ["setsid-fork", "double-fork"])
async def test_escapes_end_with_a_timeout(containment: Containment, escape: str) -> None:
    marker = _marker()
    command = ESCAPES[escape].format(m=marker) + "; sleep 100"
    outcome = await _run(command, containment, timeout_s=1)
    assert outcome.timed_out
    assert await _until_none(marker) == []


async def test_other_live_jobs_are_spared_by_a_sweep() -> None:
    containment = SubreaperContainment()
    keep, drop = _marker(), _marker()
    other = asyncio.create_task(
        run_job(
            Assignment(job_id="other", attempt=1, command=f"setsid -f sleep {keep}; sleep 100"),
            Output(),
            cancel := asyncio.Event(),
            grace=0.3,
            containment=containment,
        )
    )
    try:
        await asyncio.sleep(0.5)
        assert await _run(ESCAPES["setsid-fork"].format(m=drop), containment)
        assert await _until_none(drop) == []
        assert with_marker(keep)  # the other job's orphan lives on with its job
    finally:
        cancel.set()
        await asyncio.wait_for(other, 15)
    assert await _until_none(keep) == []


AGENT = textwrap.dedent("""
    import asyncio, sys
    from hodei.agent.containment import choose
    from hodei.agent.runner import run_job
    from hodei.domain.work import Assignment
    job = Assignment(job_id="dies", attempt=0, command=sys.argv[1])
    asyncio.run(run_job(job, lambda d: None, asyncio.Event(), containment=choose(sys.argv[2])))
""")


@pytest.mark.parametrize("mode", ["cgroup", "subreaper"])
def test_escapes_end_when_the_agent_is_killed(mode: str) -> None:
    if mode == "cgroup" and _cgroups() is None:
        pytest.skip("no writable cgroup (v2 or v1 pids/freezer) for this user")
    marker = _marker()
    command = ESCAPES["setsid-fork"].format(m=marker) + "; sleep 100"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with subprocess.Popen([sys.executable, "-c", AGENT, command, mode], env=env) as agent:
        deadline = time.monotonic() + 10
        while not with_marker(marker) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert with_marker(marker)
        agent.kill()  # no chance to clean up: its job reaper must do it
    deadline = time.monotonic() + 5
    while with_marker(marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert with_marker(marker) == []
