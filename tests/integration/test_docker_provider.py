"""The Docker provider against a real Docker engine (dockerd; .ci/services/docker.sh starts one
and builds the worker image), plus the pure parts (container spec, settings) without one.

Containers made here carry a server id of their own per test, so tests never touch each
other's containers (nor a real server's), and whatever a test leaves is removed after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hodei.adapters.providers.docker import (
    LABEL_MANAGED,
    LABEL_SERVER,
    LABEL_WORKER,
    MIN_MEMORY,
    DockerOptions,
    DockerProvider,
    container_spec,
)
from hodei.config import ServerSettings, parse_mount
from hodei.errors import ProviderError, ValidationError
from hodei.home import server_instance_id
from hodei.ports import WorkerLaunch

IMAGE = os.environ.get("HODEI_TEST_WORKER_IMAGE", "hodei-worker:latest")
# A worker that only sleeps: the container-level behaviour without a server to register with.
SLEEPER = ("sh", "-c", "exec sleep 300", "worker")


def launch(worker_id: str = "", **kw: Any) -> WorkerLaunch:
    worker_id = worker_id or f"docker-{secrets.token_hex(4)}"
    return WorkerLaunch(worker_id, "otp-" + secrets.token_hex(8), "127.0.0.1:1", **kw)


# ---- pure: no engine needed ------------------------------------------------------------------


def test_container_spec_limits_labels_and_safe_defaults() -> None:
    spec = container_spec(
        DockerOptions(image="img:1"),
        "srv1",
        launch("docker-abc", labels={"os": "linux"}, cpu=0.29, memory_bytes=200 << 20),
    )
    assert spec["labels"] == {
        LABEL_MANAGED: "true",
        LABEL_SERVER: "srv1",
        LABEL_WORKER: "docker-abc",
    }
    assert spec["nano_cpus"] == 290_000_000
    assert spec["mem_limit"] == spec["memswap_limit"] == 200 << 20
    assert spec["environment"]["HODEI_TOKEN"].startswith("otp-")
    assert spec["environment"]["HODEI_SERVER_URL"] == "127.0.0.1:1"
    assert not any(a.startswith("otp-") for a in spec["entrypoint"] + spec["command"])
    assert spec["command"] == ["--slots", "1", "--label", "os=linux"]
    assert spec["name"] == "hodei-docker-abc" and spec["image"] == "img:1"
    assert spec["network_mode"] == "host" and spec["init"] is True
    assert spec["privileged"] is False and spec["volumes"] == {}
    assert spec["security_opt"] == ["no-new-privileges:true"]


def test_container_spec_with_tls_passes_the_ca_itself_never_a_host_path() -> None:
    env = {"HODEI_CA": "/home/x/pki/ca.crt", "HODEI_CA_PEM": "-----BEGIN", "HODEI_ENROLL_URL": "u"}
    spec = container_spec(DockerOptions(), "s", launch(env=env))
    assert spec["environment"]["HODEI_CA_PEM"] == "-----BEGIN"
    assert spec["environment"]["HODEI_ENROLL_URL"] == "u"
    assert "HODEI_CA" not in spec["environment"]


def test_container_spec_without_requests_has_no_limits_and_a_memory_floor() -> None:
    plain = container_spec(DockerOptions(), "s", launch())
    assert "nano_cpus" not in plain and "mem_limit" not in plain
    tiny = container_spec(DockerOptions(), "s", launch(memory_bytes=1 << 20))
    assert tiny["mem_limit"] == MIN_MEMORY  # the agent itself must fit


def test_operator_opt_ins_reach_the_container_spec() -> None:
    options = DockerOptions(
        network="bridge",
        server_url="10.0.0.1:50051",
        privileged=True,
        docker_socket=True,
        mounts=(parse_mount("/srv/cache:/cache:rw"), parse_mount("/etc/ssl:/etc/ssl")),
    )
    spec = container_spec(options, "s", launch())
    assert spec["privileged"] is True and spec["security_opt"] == []
    assert spec["network_mode"] == "bridge"
    assert spec["environment"]["HODEI_SERVER_URL"] == "10.0.0.1:50051"
    assert spec["volumes"] == {
        "/srv/cache": {"bind": "/cache", "mode": "rw"},
        "/etc/ssl": {"bind": "/etc/ssl", "mode": "ro"},
        "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
    }


@pytest.mark.parametrize("bad", ["/a", "a:/b", "/a:b", "/a:/b:rx", "/a:/b:ro:x"])
def test_bad_docker_mounts_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="docker mount"):
        ServerSettings(provider="docker", docker_mounts=(bad,)).validate()


def test_docker_is_a_known_provider_and_the_server_id_is_stable(tmp_path: Path) -> None:
    ServerSettings(home=tmp_path, provider="docker").validate()
    with pytest.raises(ValidationError, match="available: local, docker"):
        ServerSettings(home=tmp_path, provider="nomad").validate()
    first = server_instance_id(tmp_path)
    assert len(first) == 16 and server_instance_id(tmp_path) == first


async def test_an_unreachable_engine_is_a_clear_error() -> None:
    import docker

    def connect() -> Any:
        # A closed loopback port (the SDK leaks the socket of a failed unix-socket connect).
        return docker.DockerClient(base_url="tcp://127.0.0.1:9", version="1.41", timeout=2)

    provider = DockerProvider(DockerOptions(), "s", lambda w, c: None, connect=connect)
    with pytest.raises(ProviderError, match="cannot reach the Docker engine"):
        await provider.start()


# ---- against a real engine -------------------------------------------------------------------


class Exits:
    """Collects on_exit(worker_id, code) calls."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.changed = asyncio.Event()

    def __call__(self, worker_id: str, code: int) -> None:
        self.codes[worker_id] = code
        self.changed.set()

    async def wait(self, worker_id: str, within: float = 20) -> int:
        async with asyncio.timeout(within):
            while worker_id not in self.codes:
                self.changed.clear()
                await self.changed.wait()
        return self.codes[worker_id]


@pytest.fixture
def server_id(engine: Any) -> Iterator[str]:
    value = f"test-{secrets.token_hex(6)}"
    yield value
    for container in ours(engine, value):
        container.remove(force=True)


Make = Callable[..., DockerProvider]


@pytest.fixture
async def make(server_id: str) -> AsyncIterator[Make]:
    started: list[DockerProvider] = []

    def factory(exits: Exits, **options: Any) -> DockerProvider:
        options.setdefault("image", IMAGE)
        options.setdefault("stop_grace_s", 2)
        provider = DockerProvider(DockerOptions(**options), server_id, exits)
        started.append(provider)
        return provider

    yield factory
    for provider in started:
        await provider.stop()


def ours(engine: Any, server_id: str) -> list[Any]:
    found = engine.containers.list(
        all=True, sparse=True, filters={"label": f"{LABEL_SERVER}={server_id}"}
    )
    return list(found)


async def test_a_worker_container_has_labels_limits_and_no_otp_in_its_argv(
    engine: Any, server_id: str, make: Make
) -> None:
    exits = Exits()
    provider = make(exits, entrypoint=SLEEPER)
    await provider.start()
    worker = launch(cpu=0.5, memory_bytes=96 << 20)
    await provider.provision(worker)
    container = engine.containers.get(f"hodei-{worker.worker_id}")
    attrs = container.attrs
    assert attrs["State"]["Running"]
    assert attrs["Config"]["Labels"][LABEL_MANAGED] == "true"
    assert attrs["Config"]["Labels"][LABEL_SERVER] == server_id
    assert attrs["Config"]["Labels"][LABEL_WORKER] == worker.worker_id
    host = attrs["HostConfig"]
    assert host["Memory"] == 96 << 20 and host["NanoCpus"] == 500_000_000
    assert host["NetworkMode"] == "host" and host["Privileged"] is False
    assert not host["Binds"] and "no-new-privileges:true" in host["SecurityOpt"]
    assert f"HODEI_TOKEN={worker.otp}" in attrs["Config"]["Env"]
    assert worker.otp not in " ".join([attrs["Path"], *attrs["Args"]])
    # A non-root user with a writable /tmp (the agent makes each job's private dir there).
    code, out = container.exec_run(["sh", "-c", "id -u && mktemp -d /tmp/job-XXXX"])
    assert code == 0, out
    uid, tmpdir = out.decode().split()
    assert uid != "0" and tmpdir.startswith("/tmp/job-")
    assert provider.running() == [worker.worker_id]

    await provider.terminate(worker.worker_id)
    await exits.wait(worker.worker_id)
    assert ours(engine, server_id) == []


async def test_docker_kill_reports_the_exit_and_removes_the_container(
    engine: Any, server_id: str, make: Make
) -> None:
    exits = Exits()
    provider = make(exits, entrypoint=SLEEPER)
    await provider.start()
    worker = launch()
    await provider.provision(worker)
    engine.containers.get(f"hodei-{worker.worker_id}").kill()
    assert await exits.wait(worker.worker_id) == 137
    for _ in range(100):
        if not ours(engine, server_id):
            break
        await asyncio.sleep(0.1)
    assert ours(engine, server_id) == []
    assert provider.running() == []


async def test_a_real_agent_that_cannot_register_exits_and_is_reported(
    server_id: str, make: Make
) -> None:
    exits = Exits()
    provider = make(exits)  # the image's own `hodei agent`, dialling a port nobody listens on
    await provider.start()
    worker = launch()
    await provider.provision(worker)
    assert await exits.wait(worker.worker_id, within=60) != 0


async def test_start_adopts_running_containers_of_this_server_only_and_removes_the_rest(
    engine: Any, server_id: str, make: Make
) -> None:
    first = make(Exits(), entrypoint=SLEEPER)
    await first.start()
    back, silent = launch(), launch()
    await first.provision(back)
    await first.provision(silent)
    stopped = engine.containers.create(  # of this server, but not running: removed at once
        IMAGE,
        entrypoint=list(SLEEPER),
        labels={LABEL_MANAGED: "true", LABEL_SERVER: server_id, LABEL_WORKER: "docker-dead"},
    )
    other = engine.containers.create(
        IMAGE, entrypoint=list(SLEEPER), labels={LABEL_MANAGED: "true", LABEL_SERVER: "another"}
    )
    try:
        assert len(ours(engine, server_id)) == 3
        # A new provider for the same server (as after kill -9 and a restart) reconciles: it
        # keeps the running containers (their agents reconnect with their jobs).
        adopted: list[str] = []
        exits = Exits()
        second = DockerProvider(
            DockerOptions(image=IMAGE, entrypoint=SLEEPER, stop_grace_s=1),
            server_id,
            exits,
            grace_s=2.0,
            on_adopt=adopted.append,
        )
        try:
            await second.start()
            assert sorted(adopted) == sorted([back.worker_id, silent.worker_id])
            assert sorted(second.running()) == sorted(adopted)
            names = {c.name for c in engine.containers.list(all=True, filters=first.ours)}
            assert names == {f"hodei-{back.worker_id}", f"hodei-{silent.worker_id}"}
            second.connected(back.worker_id)  # its agent came back; the other one does not
            await asyncio.sleep(1.0)
            assert len(ours(engine, server_id)) == 2  # not before the grace period
            await exits.wait(silent.worker_id, within=20)
            for _ in range(100):  # removed once it has stopped
                if len(ours(engine, server_id)) == 1:
                    break
                await asyncio.sleep(0.1)
            (left,) = ours(engine, server_id)
            assert left.attrs["Labels"][LABEL_WORKER] == back.worker_id
            assert second.running() == [back.worker_id]
            # An adopted container's exit is noticed as any other's.
            engine.containers.get(f"hodei-{back.worker_id}").kill()
            assert await exits.wait(back.worker_id) == 137
        finally:
            await second.stop()
        assert ours(engine, server_id) == []
        other.reload()  # still there: not ours
    finally:
        other.remove(force=True)
        with contextlib.suppress(Exception):
            stopped.remove(force=True)


async def test_stop_removes_every_worker_quickly(engine: Any, server_id: str, make: Make) -> None:
    exits = Exits()
    provider = make(exits, entrypoint=SLEEPER)
    await provider.start()
    workers = [launch() for _ in range(3)]
    await asyncio.gather(*(provider.provision(w) for w in workers))
    assert len(ours(engine, server_id)) == 3
    started = time.monotonic()
    await provider.stop()
    assert time.monotonic() - started < 10
    assert ours(engine, server_id) == []


async def test_a_missing_image_is_a_clear_error(engine: Any, server_id: str, make: Make) -> None:
    # A registry on a closed loopback port: the pull fails at once, without leaving the host.
    image = "127.0.0.1:9/hodei-missing:latest"
    provider = make(Exits(), image=image)
    await provider.start()
    with pytest.raises(ProviderError, match="not on the Docker engine and pulling it failed"):
        await provider.provision(launch())
    assert ours(engine, server_id) == []
