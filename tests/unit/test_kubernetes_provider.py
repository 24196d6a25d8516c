"""The Kubernetes provider's logic over a fake API (the real one is in
tests/e2e/test_kubernetes_e2e.py): starts that wait for the watch, start failures, ends and
deletions reported once, the watch resumed and listed again after 410 Gone, reconcile on
start; and job labels that place a worker (node selectors) in the provisioner."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from hodei.adapters.providers.kubernetes import KubernetesProvider
from hodei.adapters.providers.kubernetes_api import Connection, KubeApi, KubeError, WatchExpired
from hodei.adapters.providers.kubernetes_spec import (
    LABEL_SERVER,
    LABEL_WORKER,
    KubernetesOptions,
    pod_manifest,
)
from hodei.domain.jobs import Job, JobSpec
from hodei.errors import ProviderError
from hodei.ports import WorkerLaunch
from hodei.server.core.bus import EventBus
from hodei.server.core.passes import PassSignal
from hodei.server.core.provisioning import Provisioner
from hodei.server.core.workers import WorkerRegistry
from hodei.server.security.otp import OtpRegistry

SERVER = "server-1"


class FakeApi:
    """Pods and secrets in memory; watch events are whatever the test feeds `events`."""

    def __init__(self) -> None:
        self.namespace = "test"
        self.objects: dict[str, dict[str, dict[str, Any]]] = {"pods": {}, "secrets": {}}
        self.deleted: list[tuple[str, str, int | None]] = []
        self.events: asyncio.Queue[dict[str, Any] | Exception] = asyncio.Queue()
        self.watched_from: list[str] = []
        self.version = 10
        self.missing: list[tuple[str, str]] = []
        self.opened = self.closed = False

    async def open(self) -> None:
        self.opened = True

    async def close(self) -> None:
        self.closed = True

    async def missing_permissions(self) -> list[tuple[str, str]]:
        return self.missing

    async def list_of(self, resource: str, selector: str) -> dict[str, Any]:
        key, _, value = selector.partition("=")
        items = [
            copy.deepcopy(o)
            for o in self.objects[resource].values()
            if o["metadata"]["labels"].get(key) == value
        ]
        return {"items": items, "metadata": {"resourceVersion": str(self.version)}}

    async def create(self, resource: str, body: Mapping[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(dict(body))
        obj["metadata"]["uid"] = f"uid-{obj['metadata']['name']}"
        self.objects[resource][obj["metadata"]["name"]] = obj
        return copy.deepcopy(obj)

    async def delete(self, resource: str, name: str, grace_s: int | None = None) -> None:
        self.deleted.append((resource, name, grace_s))
        self.objects[resource].pop(name, None)

    async def watch(
        self, resource: str, selector: str, resource_version: str
    ) -> AsyncIterator[dict[str, Any]]:
        self.watched_from.append(resource_version)
        while True:
            item = await self.events.get()
            if isinstance(item, Exception):
                raise item
            yield item


def launch(worker_id: str = "kubernetes-1") -> WorkerLaunch:
    return WorkerLaunch(worker_id, "otp", "127.0.0.1:1")


def pod_in(
    worker_id: str, phase: str, state: dict[str, Any] | None = None, **status: Any
) -> dict[str, Any]:
    pod = pod_manifest(KubernetesOptions(), SERVER, launch(worker_id))
    pod["metadata"]["resourceVersion"] = "11"
    pod["status"] = {"phase": phase, **status}
    if state is not None:
        pod["status"]["containerStatuses"] = [{"name": "agent", "state": state}]
    return pod


RUNNING = {"running": {"startedAt": "now"}}


class World:
    def __init__(self, **options: Any) -> None:
        self.api = FakeApi()
        self.exits: list[tuple[str, int, str]] = []
        self.adopted: list[str] = []
        self.provider = KubernetesProvider(
            KubernetesOptions(**options),
            self.api,  # type: ignore[arg-type]
            SERVER,
            lambda worker, code, why: self.exits.append((worker, code, why)),
            grace_s=30.0,
            on_adopt=self.adopted.append,
        )

    async def event(self, kind: str, pod: dict[str, Any]) -> None:
        await self.api.events.put({"type": kind, "object": pod})
        for _ in range(20):  # let the watch task take it
            await asyncio.sleep(0)


async def started_worker(world: World, worker_id: str = "kubernetes-1") -> None:
    task = asyncio.create_task(world.provider.provision(launch(worker_id)))
    await asyncio.sleep(0.01)
    await world.event("MODIFIED", pod_in(worker_id, "Running", RUNNING))
    await task


async def test_provision_returns_once_the_watch_says_the_agent_runs() -> None:
    world = World()
    await world.provider.start()
    task = asyncio.create_task(world.provider.provision(launch()))
    await asyncio.sleep(0.01)
    assert set(world.api.objects["pods"]) == {"hodei-kubernetes-1"}
    secret = world.api.objects["secrets"]["hodei-kubernetes-1-otp"]
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-hodei-kubernetes-1"
    await world.event("MODIFIED", pod_in("kubernetes-1", "Pending", {"waiting": {}}))
    assert not task.done()
    await world.event("MODIFIED", pod_in("kubernetes-1", "Running", RUNNING))
    await task
    world.provider.connected("kubernetes-1")  # the OTP is spent: its Secret goes
    await asyncio.sleep(0.01)
    assert world.api.objects["secrets"] == {}
    await world.provider.stop()
    assert ("pods", "hodei-kubernetes-1", 10) in world.api.deleted
    assert world.api.closed


async def test_a_pod_that_cannot_start_is_deleted_and_the_start_fails_with_why() -> None:
    world = World()
    await world.provider.start()
    task = asyncio.create_task(world.provider.provision(launch()))
    await asyncio.sleep(0.01)
    waiting = {"waiting": {"reason": "ErrImagePull", "message": "not found"}}
    await world.event("MODIFIED", pod_in("kubernetes-1", "Pending", waiting))
    with pytest.raises(ProviderError, match="image hodei-worker:latest cannot be pulled"):
        await task
    assert ("pods", "hodei-kubernetes-1", 0) in world.api.deleted
    assert world.exits == []  # a failed start is the provisioner's, not an exit
    await world.provider.stop()


async def test_a_start_that_takes_too_long_fails_naming_what_the_pod_waits_for() -> None:
    world = World(start_timeout_s=0.05)
    await world.provider.start()
    task = asyncio.create_task(world.provider.provision(launch()))
    await asyncio.sleep(0.01)
    waiting = {"waiting": {"reason": "ContainerCreating"}}
    await world.event("MODIFIED", pod_in("kubernetes-1", "Pending", waiting))
    with pytest.raises(ProviderError, match=r"did not start within 0s .*ContainerCreating"):
        await task
    await world.provider.stop()


async def test_terminated_while_starting_ends_quietly() -> None:
    world = World()
    await world.provider.start()
    task = asyncio.create_task(world.provider.provision(launch()))
    await asyncio.sleep(0.01)
    await world.provider.terminate("kubernetes-1")  # the provisioner gave up on it
    assert await task is None  # no error: the provisioner has counted that failure already
    assert any(d[:2] == ("pods", "hodei-kubernetes-1") for d in world.api.deleted)
    assert "hodei-kubernetes-1" not in world.api.objects["pods"]
    await world.provider.stop()


async def test_ends_and_deletions_by_others_are_reported_once() -> None:
    world = World()
    await world.provider.start()
    await started_worker(world, "kubernetes-1")
    await started_worker(world, "kubernetes-2")
    oom = {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
    await world.event("MODIFIED", pod_in("kubernetes-1", "Failed", oom))
    await world.event("DELETED", pod_in("kubernetes-1", "Failed", oom))  # after our delete
    await world.event("DELETED", pod_in("kubernetes-2", "Running", RUNNING))
    assert world.exits == [
        ("kubernetes-1", 137, "OOMKilled: the agent's container went over its memory limit"),
        ("kubernetes-2", -1, "its pod was deleted by someone else"),
    ]
    assert ("pods", "hodei-kubernetes-1", 0) in world.api.deleted
    assert world.provider.running() == []
    await world.provider.stop()


async def test_the_watch_resumes_from_its_version_and_lists_again_after_410() -> None:
    world = World()
    await world.provider.start()
    await started_worker(world, "kubernetes-1")
    await started_worker(world, "kubernetes-2")
    assert world.api.watched_from == ["10"]
    await world.api.events.put(KubeError("the pods watch broke: reset"))
    await asyncio.sleep(0.7)  # the first retry waits 0.5 s
    assert world.api.watched_from == ["10", "11"]  # resumed where it was
    # While nobody watched, kubernetes-2's pod was deleted; the version is gone too.
    del world.api.objects["pods"]["hodei-kubernetes-2"]
    world.api.version = 42
    await world.api.events.put(WatchExpired())
    for _ in range(50):
        await asyncio.sleep(0)
    assert world.exits == [("kubernetes-2", -1, "its pod was deleted by someone else")]
    assert world.api.watched_from[-1] == "42"
    await world.provider.stop()


async def test_start_adopts_registered_pods_and_deletes_every_other_leftover() -> None:
    world = World()
    objects = world.api.objects
    for worker_id, phase, state in (
        ("kubernetes-a", "Running", RUNNING),  # registered: its Secret is gone
        ("kubernetes-b", "Running", RUNNING),  # never registered: its OTP died with the server
        ("kubernetes-c", "Succeeded", {"terminated": {"exitCode": 0}}),
    ):
        objects["pods"][f"hodei-{worker_id}"] = pod_in(worker_id, phase, state)
    labels = {LABEL_SERVER: SERVER, LABEL_WORKER: "kubernetes-b"}
    objects["secrets"]["hodei-kubernetes-b-otp"] = {
        "metadata": {"name": "hodei-kubernetes-b-otp", "labels": labels}
    }
    stray = {LABEL_SERVER: SERVER, LABEL_WORKER: "kubernetes-z"}
    objects["secrets"]["hodei-kubernetes-z-otp"] = {
        "metadata": {"name": "hodei-kubernetes-z-otp", "labels": stray}
    }
    other = pod_in("kubernetes-x", "Running", RUNNING)
    other["metadata"]["labels"][LABEL_SERVER] = "another-server"
    objects["pods"]["hodei-kubernetes-x"] = other
    await world.provider.start()
    assert world.adopted == ["kubernetes-a"]
    assert set(objects["pods"]) == {"hodei-kubernetes-a", "hodei-kubernetes-x"}
    assert objects["secrets"] == {}
    await world.provider.stop()


async def test_missing_permissions_stop_the_start_naming_them() -> None:
    world = World()
    world.api.missing = [("watch", "pods"), ("delete", "secrets")]
    with pytest.raises(ProviderError, match="lacks 'watch' on 'pods', 'delete' on 'secrets'"):
        await world.provider.start()


# ---- job labels that place a worker ------------------------------------------------------
class Recorder:
    name = "kubernetes"
    runs_images = False

    def __init__(self) -> None:
        self.launches: list[WorkerLaunch] = []

    async def start(self) -> None: ...

    def connected(self, worker_id: str) -> None: ...

    async def provision(self, launch: WorkerLaunch) -> None:
        self.launches.append(launch)

    async def terminate(self, worker_id: str) -> None: ...

    async def stop(self) -> None: ...


async def test_a_job_label_mapped_to_a_node_selector_gets_a_worker_with_it() -> None:
    bus = EventBus()
    recorder = Recorder()
    prov = Provisioner(
        recorder, OtpRegistry(), WorkerRegistry(bus), bus, "127.0.0.1:1", 10, 1, 30.0,
        label_keys=("gpu",),
    )  # fmt: skip
    gpu = JobSpec(command="x", labels={"gpu": "1"})
    assert prov.ceiling(gpu) is None and prov.fits({"gpu": "1"}, None)
    assert not prov.fits({"zone": "a"}, None)  # an unmapped label no worker here has
    jobs = [Job("a", gpu, seq=1), Job("b", JobSpec(command="x"), seq=2)]
    assert prov.demand(jobs) == "a worker is starting"
    await asyncio.sleep(0)
    by_labels = sorted((launch.labels for launch in recorder.launches), key=len)
    assert by_labels == [{}, {"gpu": "1"}]  # one worker each: they cannot share
    gpu_launch = next(launch for launch in recorder.launches if launch.labels)
    assert prov.otps.redeem(gpu_launch.otp).labels == {"gpu": "1"}
    options = KubernetesOptions(label_node_selectors=(("gpu", "accelerator"),))
    pod = pod_manifest(options, SERVER, gpu_launch)
    assert pod["spec"]["nodeSelector"] == {"accelerator": "1"}
    # The same demand again: both are starting, nothing more is launched.
    prov.demand(jobs)
    await asyncio.sleep(0)
    assert len(recorder.launches) == 2
    # Without the mapping, such a job is one no worker of this provider would take.
    plain = Provisioner(recorder, OtpRegistry(), WorkerRegistry(bus), bus, "", 10, 1, 30.0)
    assert plain.ceiling(gpu) == "missing labels gpu=1"


async def test_a_missing_configuration_is_a_clear_provider_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeError, match="cannot load the Kubernetes in-cluster configuration"):
        await KubeApi(Connection(in_cluster=True)).open()
    missing = str(tmp_path / "no-such-kubeconfig")
    with pytest.raises(KubeError, match="cannot load the Kubernetes kubeconfig configuration"):
        await KubeApi(Connection(kubeconfig=missing)).open()


class Failing(Recorder):
    async def provision(self, launch: WorkerLaunch) -> None:
        raise ProviderError("no node can run its pod: 0/1 nodes are available")


async def test_a_failed_start_passes_again_once_its_backoff_is_over() -> None:
    bus = EventBus()
    passes = PassSignal()
    prov = Provisioner(
        Failing(), OtpRegistry(), WorkerRegistry(bus), bus, "", 10, 1, 30.0, passes=passes
    )
    prov.demand([Job("a", JobSpec(command="x"), seq=1)])
    await asyncio.sleep(0.01)
    assert "no node can run its pod" in prov.last_error and not prov.can_grow()
    await asyncio.wait_for(passes.wait(), 1)  # at once: the waiting jobs' reason says why
    # The retry timer fired early (its loop clock was stale): it waits out the rest.
    prov._backoff_until = time.monotonic() + 0.2
    prov._backoff_over()
    assert not passes._dirty.is_set()
    await asyncio.wait_for(passes.wait(), 5)  # then passes, with the backoff over
    assert prov.can_grow()
    await prov.stop()
