"""Nothing outlives a job on the Docker provider: processes a job hides from its process group
(setsid, setsid -f, a double fork, SIGTERM ignored) are gone once the job ends, is cancelled or
times out, and when the agent inside the container is killed with SIGKILL.

Containers share the host's kernel, so their processes are in the host's /proc: each test
gives its escapee a unique marker (`sleep 777.<random>`) and looks for it there (and in
`docker top`). The agent in a worker container chooses its containment itself (a cgroup per
job where it can make one, else it is a child subreaper); one test finds out which, from the
kernel's view of an orphan, and checks that it is one that works there.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import pytest
from docker_containers import docker_home, ours
from harness import RunningServer, stop_server
from proc_scan import with_marker

pytestmark = pytest.mark.e2e
__all__ = ["docker_home"]  # the `home` fixture

IMAGE = os.environ.get("HODEI_TEST_WORKER_IMAGE", "hodei-worker:latest")
FLAGS = ("--max-workers", "1", "--worker-idle", "60s")
QUIET = ">/dev/null 2>&1 </dev/null"
T = TypeVar("T")
_IMAGES_CHECKED: dict[str, str] = {}  # image id -> "" (has containment) or why not


def require(available: bool, message: str) -> None:
    """As tests/conftest.py's require_service: skip loudly, fail under HODEI_REQUIRE_SERVICES=1."""
    if available:
        return
    if os.environ.get("HODEI_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (HODEI_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture
def contained(engine: Any) -> Any:
    """The engine, once the worker image is known to carry the agent's job containment (an
    image built before it would run these jobs without it)."""
    image_id = str(engine.images.get(IMAGE).id)
    if image_id not in _IMAGES_CHECKED:
        probe = ["python", "-c", "import hodei.agent.containment"]
        try:
            engine.containers.run(IMAGE, probe, entrypoint=[], remove=True, network_mode="none")
            _IMAGES_CHECKED[image_id] = ""
        except Exception as exc:  # ContainerError: the module is not in the image
            said = getattr(exc, "stderr", None) or str(exc).encode()
            _IMAGES_CHECKED[image_id] = (
                said.decode(errors="replace").strip().splitlines() or ["?"]
            )[-1]
    why = _IMAGES_CHECKED[image_id]
    require(
        not why,
        f"worker image {IMAGE} predates the agent's job containment ({why}): rebuild it "
        "(scripts/build_worker_image.sh)",
    )
    return engine


def start(factory: type, home: Path) -> RunningServer:
    server: RunningServer = factory.start(  # type: ignore[attr-defined]
        "--provider", "docker", "--worker-image", IMAGE, *FLAGS, home=home
    )
    return server


def post(client: httpx.Client, command: str, **fields: Any) -> str:
    # no_infra_retry: a job run again would start a new process with the same marker.
    response = client.post(
        "/api/v1/jobs", json={"command": command, "no_infra_retry": True, **fields}
    )
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


def marker() -> str:
    return f"777.{secrets.randbelow(10**12):012d}"


def wait_for(what: str, check: Callable[[], T], timeout: float, every: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(every)
    return value


def escapees(mark: str) -> list[int]:
    return with_marker(mark, exact=True)


def gone(mark: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (left := with_marker(mark)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == [], f"outlived the job: {[cmdline(p) for p in left]}"


def cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return f"{pid} (gone)"


def container_of(engine: Any, server: RunningServer, job_id: str) -> Any:
    worker_id = server.wait_state(job_id, {"running", "succeeded", "failed"}, 60)["worker_id"]
    return engine.containers.get(f"hodei-{worker_id}")


def in_top(container: Any, mark: str) -> bool:
    """Whether `docker top` lists a process with the marker in its command."""
    top = container.top(ps_args="-eo pid,args")
    return any(mark in " ".join(map(str, row)) for row in top.get("Processes") or [])


def agent_pid(container: Any) -> int:
    """The host pid of `hodei agent` in the container (the child of its init, docker-init)."""
    container.reload()
    init = psutil.Process(int(container.attrs["State"]["Pid"]))
    if "agent" in " ".join(init.cmdline()) and "docker-init" not in init.cmdline()[0]:
        return int(init.pid)  # no init in front of it
    agents = [p for p in init.children() if "agent" in " ".join(p.cmdline())]
    assert len(agents) == 1, [" ".join(p.cmdline()) for p in init.children()]
    return int(agents[0].pid)


def status_field(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == name:
                return value.strip()
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def cgroup_mounts_writable(pid: int) -> bool:
    """Whether any cgroup hierarchy is mounted read-write in the mount namespace of `pid`."""
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if rfields and rfields[0] in ("cgroup", "cgroup2") and "rw" in fields[5].split(","):
                return True
    return False


def ended(server: RunningServer, job_id: str) -> dict[str, Any]:
    states = {"succeeded", "failed", "cancelled", "timed_out"}
    job: dict[str, Any] = server.wait_state(job_id, states, timeout=60)
    return job


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(f"setsid sleep {{m}} {QUIET} & sleep 1; echo spawned", id="setsid"),
        pytest.param(f"( (sleep {{m}} {QUIET} &) & ); sleep 1; echo spawned", id="double-fork"),
    ],
)
def test_an_escapee_ends_with_its_job(
    server_factory: type, home: Path, contained: Any, command: str
) -> None:
    server = start(server_factory, home)
    mark = marker()
    with server.http() as client:
        job_id = post(client, command.format(m=mark))
    wait_for("the escapee", lambda: escapees(mark), 60, every=0.02)
    container = container_of(contained, server, job_id)
    job = ended(server, job_id)
    assert job["state"] == "succeeded" and job["exit_code"] == 0, job
    gone(mark)
    assert not in_top(container, mark)
    with server.http() as client:
        assert client.get(f"/api/v1/jobs/{job_id}/logs").text == "spawned\n"
    stop_server(server)
    assert ours(contained, home) == []


def test_a_setsid_fork_escapee_ends_with_a_cancel(
    server_factory: type, home: Path, contained: Any
) -> None:
    server = start(server_factory, home)
    mark = marker()
    with server.http() as client:
        job_id = post(client, f"setsid -f sleep {mark} {QUIET}; sleep 100")
    wait_for("the escapee", lambda: escapees(mark), 60)
    container = container_of(contained, server, job_id)
    assert in_top(container, mark)  # it is the container's, as docker sees it
    assert server.wait_state(job_id, {"running"}, 30)
    cancel = server.hodei("cancel", job_id)
    assert cancel.returncode == 0, cancel.stderr.decode()
    assert ended(server, job_id)["state"] == "cancelled"
    gone(mark)
    assert not in_top(container, mark)
    assert container.status == "running"  # the worker lives on: the job's processes did not


def test_an_escapee_ignoring_sigterm_ends_with_the_timeout(
    server_factory: type, home: Path, contained: Any
) -> None:
    server = start(server_factory, home)
    mark = marker()
    command = f"setsid bash -c \"trap '' TERM; sleep {mark}\" {QUIET} & sleep 100"
    submitted = server.hodei("submit", "--timeout", "2s", "--no-infra-retry", "--", command)
    assert submitted.returncode == 0, submitted.stderr.decode()
    job_id = submitted.stdout.decode().split()[-1]
    escapee = wait_for("the escapee", lambda: escapees(mark), 60)[0]
    ignored = int(status_field(escapee, "SigIgn"), 16)
    assert ignored & (1 << (signal.SIGTERM - 1)), "the escapee does not ignore SIGTERM"
    container = container_of(contained, server, job_id)
    job = ended(server, job_id)
    assert job["state"] == "timed_out", job
    gone(mark)
    assert not in_top(container, mark)


def test_the_agent_in_a_container_contains_jobs_in_a_way_that_works_there(
    server_factory: type, home: Path, contained: Any
) -> None:
    """Which containment the agent chose, seen from the kernel: an orphan of the job is in a
    job cgroup (cgroup mode) or was reparented to the agent (subreaper mode), not to the
    container's init. With the container's cgroup hierarchies read-only (Docker's default for
    a container that is not privileged) only the subreaper can work."""
    server = start(server_factory, home)
    mark = marker()
    with server.http() as client:
        job_id = post(client, f"setsid -f sleep {mark} {QUIET}; sleep 100")
    escapee = wait_for("the escapee", lambda: escapees(mark), 60)[0]
    container = container_of(contained, server, job_id)
    agent = agent_pid(container)
    with open(f"/proc/{escapee}/cgroup") as f:
        in_job_cgroup = "/hodei-job-" in f.read()
    reparented = int(status_field(escapee, "PPid")) == agent
    mode = "cgroup" if in_job_cgroup else "subreaper" if reparented else ""
    parent = cmdline(int(status_field(escapee, "PPid")))
    assert mode, f"the orphan is in no job cgroup and its parent is {parent}, not the agent"
    if not cgroup_mounts_writable(agent):
        assert mode == "subreaper", "cgroups are read-only in the container"
    logs = container.logs().decode(errors="replace")
    assert "cannot become a child subreaper" not in logs, logs
    assert ("jobs run in cgroups under" in logs) == (mode == "cgroup"), logs
    assert server.hodei("cancel", job_id).returncode == 0
    assert ended(server, job_id)["state"] == "cancelled"
    gone(mark)


def test_an_escapee_ends_when_the_agent_is_killed(
    server_factory: type, home: Path, contained: Any
) -> None:
    server = start(server_factory, home)
    mark = marker()
    with server.http() as client:
        job_id = post(client, f"setsid -f sleep {mark} {QUIET}; sleep 100")
    wait_for("the escapee", lambda: escapees(mark), 60)
    container = container_of(contained, server, job_id)
    os.kill(agent_pid(container), signal.SIGKILL)  # no chance to clean up
    gone(mark, timeout=15)  # the job reaper, or the container's end with its init
    job = ended(server, job_id)
    assert job["state"] == "failed" and job["attempts"] == 1, job  # a lost worker
    wait_for("the container's removal", lambda: not ours(contained, home), 30, every=0.2)
    assert with_marker(mark) == []


def test_docker_itself_lists_no_escapee_after_a_job_on_an_idle_worker(
    server_factory: type, home: Path, contained: Any
) -> None:
    """Several escapes in one job, then `docker top` and the host agree the container holds
    only the agent and its helper once the job is over."""
    server = start(server_factory, home)
    mark = marker()
    command = (
        f"setsid sleep {mark} {QUIET} & setsid -f sleep {mark} {QUIET}; "
        f"( (sleep {mark} {QUIET} &) & ); sleep 1; echo spawned"
    )
    with server.http() as client:
        job_id = post(client, command)
    wait_for("the escapees", lambda: len(escapees(mark)) >= 3, 60, every=0.02)
    container = container_of(contained, server, job_id)
    assert ended(server, job_id)["state"] == "succeeded"
    gone(mark)
    top = container.top(ps_args="-eo pid,args")["Processes"]
    commands = [" ".join(map(str, row[1:])) for row in top]
    assert all("hodei agent" in c or "-I -S -c" in c for c in commands), commands
