"""Jobs in their own image: the image reference, placement keyed by image, provisioning per
image, the frozen agent's job environment and the Docker container spec of a job image."""

from __future__ import annotations

import asyncio

import pytest

from hodei.adapters.providers.docker import DockerOptions, container_spec
from hodei.adapters.providers.docker_images import (
    AGENT_COMMAND,
    AGENT_DIR,
    LABEL_IMAGE,
    TMP_DIR,
    job_image_spec,
)
from hodei.agent.frozen import job_environment
from hodei.domain.jobs import Job, JobSpec, check_image, validate_spec
from hodei.domain.scheduling import Placement, Rejection, WorkerView, place, unschedulable
from hodei.errors import ImageUnavailable, ValidationError
from hodei.ports import WorkerLaunch
from hodei.server.core.bus import EventBus
from hodei.server.core.bus import ImageUnavailable as ImageUnavailableEvent
from hodei.server.core.job_queue import JobQueue
from hodei.server.core.provisioning import Provisioner
from hodei.server.core.workers import WorkerRegistry
from hodei.server.security.otp import OtpRegistry


@pytest.mark.parametrize(
    "image",
    [
        "node:20",
        "alpine",
        "registry.local:5000/team/build:1.2-rc_1",
        "localhost/hodei-test-busybox:1",
        "library/ubuntu@sha256:" + "a" * 64,
        "ghcr.io/org/tool__x",
    ],
)
def test_image_references_docker_takes_are_accepted(image: str) -> None:
    assert check_image(image) == image
    assert validate_spec(JobSpec(command="true", image=image)).image == image


@pytest.mark.parametrize(
    "image",
    ["", "Node:20", "node:", "a b", "-x", "x/../y", ":tag", "node:20;rm -rf /", "x" * 300],
)
def test_bad_image_references_are_refused_saying_what_one_looks_like(image: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_spec(JobSpec(command="true", image=image))
    assert "image" in caught.value.message


def test_a_job_lands_only_on_a_worker_of_its_image() -> None:
    plain = WorkerView("plain", {}, slots=1)
    node = WorkerView("node", {}, slots=1, image="node:20")
    assert place(JobSpec(command="x", image="node:20"), [plain, node]) == Placement("node")
    assert place(JobSpec(command="x"), [plain, node]) == Placement("plain")
    refused = place(JobSpec(command="x", image="alpine"), [plain, node])
    assert isinstance(refused, Rejection)
    assert refused.reasons == {
        "plain": "runs the worker image, not alpine",
        "node": "runs image node:20, not alpine",
    }


class FakeProvider:
    """Records launches; pure bookkeeping for the provisioner's logic."""

    name = "fake"

    def __init__(self, runs_images: bool = True, broken: str = "") -> None:
        self.runs_images = runs_images
        self.broken = broken
        self.launches: list[WorkerLaunch] = []

    async def start(self) -> None: ...

    def connected(self, worker_id: str) -> None: ...

    async def provision(self, launch: WorkerLaunch) -> None:
        if launch.image is not None and launch.image == self.broken:
            raise ImageUnavailable(launch.image, f"image {launch.image} cannot be pulled")
        self.launches.append(launch)

    async def terminate(self, worker_id: str) -> None: ...

    async def stop(self) -> None: ...


def provisioner(provider: FakeProvider, bus: EventBus, slots: int = 2) -> Provisioner:
    return Provisioner(
        provider, OtpRegistry(), WorkerRegistry(bus), bus, "127.0.0.1:1", 10, slots, 30.0
    )


def jobs(*images: str | None) -> list[Job]:
    return [
        Job(f"j{n}", JobSpec(command="true", image=image), seq=n) for n, image in enumerate(images)
    ]


async def test_workers_are_started_per_image_and_counted_per_image() -> None:
    bus = EventBus()
    fake = FakeProvider()
    prov = provisioner(fake, bus, slots=2)
    assert prov.demand(jobs("node:20", "node:20", "node:20", None, "alpine")) == (
        "a worker is starting"
    )
    await asyncio.sleep(0)
    started = sorted((launch.image or "-") for launch in fake.launches)
    assert started == ["-", "alpine", "node:20", "node:20"]  # 3 node jobs on 2-slot workers
    # The same demand again: each image has its workers starting, nothing more is launched.
    prov.demand(jobs("node:20", "node:20", "node:20", None, "alpine"))
    await asyncio.sleep(0)
    assert len(fake.launches) == 4
    # The OTP of a worker binds its image: what it registers with cannot be changed by it.
    node_launch = next(launch for launch in fake.launches if launch.image == "node:20")
    assert prov.otps.redeem(node_launch.otp).image == "node:20"


def test_a_provider_without_images_says_so_and_is_not_asked() -> None:
    bus = EventBus()
    fake = FakeProvider(runs_images=False)
    prov = provisioner(fake, bus)
    spec = JobSpec(command="x", image="node:20")
    assert prov.ceiling(spec) == "image node:20: the fake provider runs no container images"
    assert not prov.fits({}, "node:20") and prov.fits({}, None)
    assert prov.demand(jobs("node:20")) is None
    never = unschedulable(spec, [WorkerView("w", {}, slots=1)], prov.ceiling)
    assert never == (
        "unschedulable: 1 worker(s): runs the worker image, not node:20; "
        "provider: image node:20: the fake provider runs no container images"
    )


async def test_an_image_that_cannot_be_had_is_announced_without_backing_off_others() -> None:
    bus = EventBus()
    heard: list[ImageUnavailableEvent] = []
    bus.subscribe(ImageUnavailableEvent, heard.append)
    fake = FakeProvider(broken="nope:1")
    prov = provisioner(fake, bus)
    prov.demand(jobs("nope:1"))
    for _ in range(3):
        await asyncio.sleep(0)
    assert heard == [ImageUnavailableEvent("nope:1", "image nope:1 cannot be pulled")]
    assert not prov.launching and not prov.owned and prov.last_error == ""
    assert prov.can_grow()  # no backoff: other images still start at once
    prov.demand(jobs("alpine"))
    await asyncio.sleep(0)
    assert [launch.image for launch in fake.launches] == ["alpine"]


def test_the_queue_lists_its_jobs_of_an_image() -> None:
    queue = JobQueue()
    for job in jobs("a:1", None, "a:1", "b:2"):
        queue.push(job)
    assert sorted(j.id for j in queue.with_image("a:1")) == ["j0", "j2"]


def test_the_frozen_agent_gives_jobs_the_image_environment_back() -> None:
    agent = {
        "PATH": "/usr/bin",
        "LD_LIBRARY_PATH": "/.hodei/agent/_internal",
        "_PYI_ARCHIVE_FILE": "/.hodei/agent/hodei-agent",
        "_PYI_PARENT_PROCESS_LEVEL": "1",
    }
    assert job_environment(agent, is_frozen=True) == {"PATH": "/usr/bin"}
    with_own = {**agent, "LD_LIBRARY_PATH_ORIG": "/usr/local/cuda/lib64"}
    assert job_environment(with_own, is_frozen=True) == {
        "PATH": "/usr/bin",
        "LD_LIBRARY_PATH": "/usr/local/cuda/lib64",
    }
    assert job_environment(agent, is_frozen=False) == agent  # `python -m hodei.agent`: as is


def test_a_job_image_container_runs_the_injected_agent_read_only() -> None:
    launch = WorkerLaunch("docker-1", "otp", "127.0.0.1:9", {"k": "v"}, 1, image="busybox:1")
    base = container_spec(DockerOptions(), "server-1", launch)
    spec = job_image_spec(base, "busybox:1", "hodei-agent-abc", user="1234:1234")
    assert spec["image"] == "busybox:1"
    assert spec["entrypoint"] == list(AGENT_COMMAND)
    assert spec["command"] == base["command"] == ["--slots", "1", "--label", "k=v"]
    assert spec["volumes"]["hodei-agent-abc"] == {"bind": AGENT_DIR, "mode": "ro"}
    assert spec["tmpfs"] == {TMP_DIR: "rw,exec,nosuid,nodev,mode=1777"}
    assert spec["environment"]["HODEI_TOKEN"] == "otp"  # in the environment, not the argv
    assert spec["environment"]["HODEI_WORKER_IMAGE"] == "busybox:1"
    assert spec["labels"][LABEL_IMAGE] == "busybox:1"
    assert spec["network_mode"] == "host" and spec["init"] is True
    assert spec["user"] == "1234:1234"
    assert "user" not in job_image_spec(base, "busybox:1", "v")  # the image's own user
    assert not spec["privileged"] and "/var/run/docker.sock" not in spec["volumes"]
