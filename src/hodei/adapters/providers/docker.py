"""Docker provider: each worker is a container running `hodei agent`, on a real Docker engine.

The engine is found as the Docker SDK finds it (DOCKER_HOST, DOCKER_TLS_VERIFY,
DOCKER_CERT_PATH; default the local socket). Every SDK call blocks, so each runs in a thread
(asyncio.to_thread) and the event loop never waits on the engine; container exits arrive from
a dedicated thread that follows the engine's event stream.

Containers carry labels (io.hodei.managed, io.hodei.server = this server's instance id kept in
HODEI_HOME, io.hodei.worker-id), so the server finds its own and only its own: `start()` adopts
the containers of this server still running from an earlier run (after kill -9, say: their
agents reconnect and keep their jobs), removes the others, and removes an adopted one that has
not reconnected (`connected()`) within the grace period; `stop()` removes all it holds. The
worker's single-use OTP travels in the container's environment, never on its command line, and
is spent once the agent has registered. The job's cpu/memory requests become the container's
limits. Safe by default: no privileged mode, no Docker socket and no host path is given to a
worker container unless the operator's configuration says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import docker
import requests
from docker import errors as derr
from docker.types import LogConfig

from hodei.adapters.providers.docker_images import AgentVolume, job_image_spec, pull_job_image
from hodei.adapters.providers.local import AdoptHandler, ExitHandler
from hodei.errors import ProviderError
from hodei.ports import WorkerLaunch

log = logging.getLogger(__name__)

LABEL_MANAGED = "io.hodei.managed"
LABEL_SERVER = "io.hodei.server"
LABEL_WORKER = "io.hodei.worker-id"
AGENT_ENTRYPOINT = ("hodei", "agent")
DOCKER_SOCKET = "/var/run/docker.sock"
# The agent itself lives inside the job's memory limit; below this it could not even start.
MIN_MEMORY = 64 << 20
IMAGE_HELP = (
    "build it with scripts/build_worker_image.sh (offline) or "
    "`docker build -f images/worker.Dockerfile -t {image} .`"
)

Client = Any  # docker.DockerClient: the SDK ships no type information
# What of the server's agent environment a container is given (host paths mean nothing there).
AGENT_ENV_KEYS = ("HODEI_CA_PEM", "HODEI_ENROLL_URL", "HODEI_OTLP_ENDPOINT")


@dataclass(frozen=True, slots=True)
class DockerOptions:
    image: str = "hodei-worker:latest"
    network: str = "host"  # the worker containers' network mode
    server_url: str = ""  # the gRPC address containers dial; empty: the one the server gives
    privileged: bool = False
    docker_socket: bool = False  # mount the engine's socket into workers (root on the host!)
    mounts: tuple[tuple[str, str, str], ...] = ()  # (host path, container path, "ro" | "rw")
    entrypoint: tuple[str, ...] = AGENT_ENTRYPOINT
    stop_grace_s: float = 10.0  # SIGTERM to the agent, then SIGKILL
    job_user: str = ""  # the user containers of job images run as (empty: the image's own)


def engine_address() -> str:
    # Only for error messages: the SDK itself reads DOCKER_HOST.
    return os.environ.get("DOCKER_HOST") or f"unix://{DOCKER_SOCKET}"


@contextlib.contextmanager
def converted(action: str) -> Iterator[None]:
    """Docker SDK errors become ProviderError with a message that says what to do."""
    try:
        yield
    except derr.APIError as exc:
        raise ProviderError(f"{action}: {exc.explanation or exc}") from None
    except (derr.DockerException, requests.RequestException, OSError) as exc:
        raise ProviderError(
            f"{action}: cannot reach the Docker engine at {engine_address()} ({exc}); is dockerd "
            "running, and is DOCKER_HOST right?"
        ) from None


def container_spec(options: DockerOptions, server_id: str, launch: WorkerLaunch) -> dict[str, Any]:
    """The keyword arguments of `containers.create` for one worker (pure: no engine needed)."""
    args = ["--slots", str(launch.slots)]
    for key, value in sorted(launch.labels.items()):
        args += ["--label", f"{key}={value}"]
    spec: dict[str, Any] = {
        "image": options.image,
        "entrypoint": list(options.entrypoint),
        "command": args,
        "name": f"hodei-{launch.worker_id}",
        # The OTP is in the environment, not in the argv `docker ps` and /proc show.
        "environment": {
            "HODEI_TOKEN": launch.otp,
            "HODEI_SERVER_URL": options.server_url or launch.server_url,
            # With --tls: the CA certificate itself (the host's path means nothing in here)
            # and where to enroll; with traces on, where the agent sends its spans.
            **{k: v for k, v in launch.env.items() if k in AGENT_ENV_KEYS},
        },
        "labels": {LABEL_MANAGED: "true", LABEL_SERVER: server_id, LABEL_WORKER: launch.worker_id},
        "network_mode": options.network,
        "init": True,  # a real PID 1: forwards SIGTERM to the agent, reaps orphans of jobs
        "privileged": options.privileged,
        "security_opt": [] if options.privileged else ["no-new-privileges:true"],
        "volumes": _volumes(options),
        "log_config": LogConfig(type="json-file", config={"max-size": "10m", "max-file": "2"}),
    }
    if launch.cpu > 0:
        spec["nano_cpus"] = round(launch.cpu * 1e9)
    if launch.memory_bytes > 0:
        memory = max(launch.memory_bytes, MIN_MEMORY)
        spec["mem_limit"] = memory
        spec["memswap_limit"] = memory  # no swap on top of the limit
    return spec


def _volumes(options: DockerOptions) -> dict[str, dict[str, str]]:
    volumes = {host: {"bind": target, "mode": mode} for host, target, mode in options.mounts}
    if options.docker_socket:
        volumes[DOCKER_SOCKET] = {"bind": DOCKER_SOCKET, "mode": "rw"}
    return volumes


@dataclass(slots=True)
class _Worker:
    container_id: str
    started: bool = False
    exit_code: int | None = None  # an exit seen before start() returned


class DockerProvider:
    name = "docker"
    runs_images = True  # a job image gets the agent executable injected

    def __init__(
        self,
        options: DockerOptions,
        server_id: str,
        on_exit: ExitHandler,
        connect: Callable[[], Client] = docker.from_env,
        *,
        grace_s: float = 30.0,
        on_adopt: AdoptHandler | None = None,
    ) -> None:
        self.options = options
        self.server_id = server_id
        self._on_exit = on_exit
        self._on_adopt = on_adopt
        self._grace_s = grace_s  # how long an adopted container's agent has to reconnect
        self._adopted: set[str] = set()  # from an earlier run, not reconnected yet
        self._grace_timer: asyncio.Task[None] | None = None
        self._connect = connect
        self._client: Client = None
        self._workers: dict[str, _Worker] = {}
        self._terminated: set[str] = set()  # stopped by us: their exit is expected
        self._inflight: set[asyncio.Task[None]] = set()  # provisions, awaited by stop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._watcher: EventWatcher | None = None
        self._closing = False
        self._agent_volume = AgentVolume(options.image)  # for workers in a job's image

    @property
    def ours(self) -> dict[str, list[str]]:
        """The label filter that finds this server's containers."""
        return {"label": [f"{LABEL_SERVER}={self.server_id}"]}

    # ---- start: connect, reconcile, follow exits ------------------------------------------
    async def start(self) -> None:
        self._client = await asyncio.to_thread(self._open)
        running, removed = await asyncio.to_thread(self._reconcile)
        if removed:
            log.warning("removed %d stopped worker container(s) of an earlier run", removed)
        for worker_id, container_id in running.items():
            self._workers[worker_id] = _Worker(container_id, started=True)
            self._adopted.add(worker_id)
            if self._on_adopt is not None:
                self._on_adopt(worker_id)
        if running:
            log.info(
                "adopted %d worker container(s) of an earlier run; they have %.0fs to reconnect",
                len(running),
                self._grace_s,
            )
            self._grace_timer = asyncio.create_task(self._expire_adopted())
        await asyncio.to_thread(self._check_image)
        loop = asyncio.get_running_loop()
        self._watcher = EventWatcher(
            self._connect,
            {"type": "container", "event": ["die"], **self.ours},
            lambda wid, code: loop.call_soon_threadsafe(self._exited, wid, code),
            lambda: loop.call_soon_threadsafe(self._spawn, self._resync()),
        )
        self._watcher.start()

    def _open(self) -> Client:
        with converted("docker provider"):
            client = self._connect()
            client.ping()
            return client

    def _reconcile(self) -> tuple[dict[str, str], int]:
        """This server's containers of an earlier run: those running (worker id -> container
        id) are kept; the rest are removed (how many, second)."""
        with converted("cannot list this server's worker containers"):
            # sparse: the list's own fields (labels, state), no inspect per container
            containers = self._client.containers.list(all=True, sparse=True, filters=self.ours)
        running: dict[str, str] = {}
        removed = 0
        for container in containers:
            worker_id = (container.attrs.get("Labels") or {}).get(LABEL_WORKER, "")
            if worker_id and container.attrs.get("State") == "running":
                log.info("adopting worker %s (container %s)", worker_id, container.id[:12])
                running[worker_id] = str(container.id)
            else:
                self._remove_quietly(container.id)
                removed += 1
        return running, removed

    async def _expire_adopted(self) -> None:
        await asyncio.sleep(self._grace_s)
        late = [w for w in self._adopted if w in self._workers]
        self._adopted.clear()
        for worker_id in late:
            log.warning("worker %s did not reconnect in time; removing its container", worker_id)
        await asyncio.gather(*(self.terminate(w) for w in late))

    def connected(self, worker_id: str) -> None:
        """A worker registered or resumed its session with the server."""
        self._adopted.discard(worker_id)

    def _remove_ours(self) -> int:
        with converted("cannot list this server's worker containers"):
            # sparse: no inspect per container, which would race with removals in progress
            containers = self._client.containers.list(all=True, sparse=True, filters=self.ours)
        for container in containers:
            self._remove_quietly(container.id)
        return len(containers)

    def _check_image(self) -> None:
        try:
            self._client.images.get(self.options.image)
        except derr.ImageNotFound:
            log.warning(
                "worker image %s is not on the Docker engine; it will be pulled when a worker "
                "is needed (or %s)",
                self.options.image,
                IMAGE_HELP.format(image=self.options.image),
            )
        except (derr.DockerException, requests.RequestException) as exc:
            log.warning("cannot check the worker image %s: %s", self.options.image, exc)

    # ---- provision ---------------------------------------------------------------------------
    async def provision(self, launch: WorkerLaunch) -> None:
        if self._closing:
            raise ProviderError("the docker provider is stopping")
        # Shielded: a caller that gives up (server shutdown) must not leave a container behind
        # half made; stop() waits for in-flight provisions, which then clean up after themselves.
        task = asyncio.create_task(self._provision(launch))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        await asyncio.shield(task)

    async def _provision(self, launch: WorkerLaunch) -> None:
        container_id = await asyncio.to_thread(self._create, launch)
        worker = self._workers[launch.worker_id] = _Worker(container_id)
        try:
            if self._closing:
                raise ProviderError("the docker provider is stopping")
            await asyncio.to_thread(self._start, container_id)
        except ProviderError:
            self._workers.pop(launch.worker_id, None)
            await asyncio.to_thread(self._remove_quietly, container_id)
            raise
        worker.started = True
        log.info("worker %s: container %s started", launch.worker_id, container_id[:12])
        if worker.exit_code is not None:  # it died while start() was returning
            self._exited(launch.worker_id, worker.exit_code)

    def _create(self, launch: WorkerLaunch) -> str:
        spec = container_spec(self.options, self.server_id, launch)
        image = launch.image or self.options.image
        with converted(f"cannot create a worker container from {image}"):
            if launch.image is not None:
                volume = self._agent_volume.ensure(self._client)
                spec = job_image_spec(spec, launch.image, volume, self.options.job_user)
            try:
                return str(self._client.containers.create(**spec).id)
            except derr.ImageNotFound:
                if launch.image is not None:
                    pull_job_image(self._client, launch.image)
                else:
                    self._pull()
                return str(self._client.containers.create(**spec).id)

    def _pull(self) -> None:
        image = self.options.image
        log.info("pulling worker image %s", image)
        try:
            self._client.images.pull(image)
        except derr.APIError as exc:
            raise ProviderError(
                f"worker image {image} is not on the Docker engine and pulling it failed "
                f"({exc.explanation or exc}); {IMAGE_HELP.format(image=image)}"
            ) from None

    def _start(self, container_id: str) -> None:
        with converted(f"cannot start worker container {container_id[:12]}"):
            self._client.containers.get(container_id).start()

    # ---- exits -------------------------------------------------------------------------------
    def _exited(self, worker_id: str, code: int) -> None:
        """A container of ours died (event thread, or a resync): report it once, remove it."""
        worker = self._workers.get(worker_id)
        if worker is None:
            return
        if not worker.started:
            worker.exit_code = code
            return
        del self._workers[worker_id]
        terminated = worker_id in self._terminated
        self._terminated.discard(worker_id)
        expected = terminated or self._closing
        if not expected and code == 0:  # e.g. the agent obeyed an idle Shutdown
            log.info("worker %s: its container exited", worker_id)
        if not terminated:  # terminate() removes the container itself
            report = worker_id if not expected and code != 0 else ""
            self._spawn(self._reap(worker.container_id, report, code))
        self._on_exit(worker_id, code)

    async def _reap(self, container_id: str, report: str, code: int) -> None:
        """Remove a dead container; first log its last output when its end is unexpected."""
        if report:
            tail = await asyncio.to_thread(self._log_tail, container_id)
            log.warning(
                "worker %s: its container exited with code %d; its last output:\n%s",
                report,
                code,
                tail or "(none)",
            )
        await asyncio.to_thread(self._remove_quietly, container_id)

    def _log_tail(self, container_id: str) -> str:
        try:
            raw = self._client.containers.get(container_id).logs(tail=20)
        except (derr.DockerException, requests.RequestException):
            return ""
        return bytes(raw).decode(errors="replace").rstrip()

    async def _resync(self) -> None:
        """After the event stream (re)connects: exits it may have missed."""
        for worker_id, worker in list(self._workers.items()):
            if worker.started:
                code = await asyncio.to_thread(self._exit_code, worker.container_id)
                if code is not None:
                    self._exited(worker_id, code)

    def _exit_code(self, container_id: str) -> int | None:
        """None while the container runs; its exit code (-1 when it is gone) otherwise."""
        try:
            state = self._client.containers.get(container_id).attrs["State"]
        except derr.NotFound:
            return -1
        except (derr.DockerException, requests.RequestException):
            return None
        return None if state.get("Running") else int(state.get("ExitCode", -1))

    # ---- terminate and stop ------------------------------------------------------------------
    async def terminate(self, worker_id: str) -> None:
        worker = self._workers.get(worker_id)
        if worker is None:
            return
        self._terminated.add(worker_id)
        await asyncio.to_thread(self._stop_container, worker.container_id)

    def _stop_container(self, container_id: str) -> None:
        try:
            self._client.api.stop(container_id, timeout=int(self.options.stop_grace_s))
        except derr.NotFound:
            return
        except (derr.DockerException, requests.RequestException) as exc:
            log.warning("cannot stop container %s: %s", container_id[:12], exc)
        self._remove_quietly(container_id)

    def _remove_quietly(self, container_id: str) -> None:
        """Remove a container; return once it is gone (or removing it failed: logged)."""
        for _ in range(100):
            try:
                self._client.api.remove_container(container_id, force=True)
            except derr.NotFound:
                return
            except derr.APIError as exc:
                if exc.status_code != 409:
                    log.warning("cannot remove container %s: %s", container_id[:12], exc)
                    return
                time.sleep(0.1)  # 409: a removal is in progress; wait until it is done
                continue
            except (derr.DockerException, requests.RequestException) as exc:
                log.warning("cannot remove container %s: %s", container_id[:12], exc)
            return

    async def stop(self) -> None:
        self._closing = True
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            await asyncio.gather(self._grace_timer, return_exceptions=True)
        await asyncio.gather(*self._inflight, return_exceptions=True)
        await asyncio.gather(*(self.terminate(w) for w in list(self._workers)))
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            with contextlib.suppress(ProviderError):
                await asyncio.to_thread(self._remove_ours)  # anything of ours still there
        if self._watcher is not None:
            await asyncio.to_thread(self._watcher.close)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await asyncio.to_thread(self._client.close)

    def running(self) -> list[str]:
        return list(self._workers)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class EventWatcher:
    """Follows the engine's `die` events in a thread of its own (the stream blocks) and
    reconnects when it drops; after each (re)connect `on_connect` lets the provider look for
    exits it may have missed meanwhile."""

    def __init__(
        self,
        connect: Callable[[], Client],
        filters: dict[str, Any],
        on_die: Callable[[str, int], object],
        on_connect: Callable[[], object],
    ) -> None:
        self._connect = connect
        self._filters = filters
        self._on_die = on_die
        self._on_connect = on_connect
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._stream: Any = None
        self._thread = threading.Thread(target=self._run, name="docker-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                self._follow()
            except Exception as exc:  # any failure of the stream: reconnect, never die
                if not self._closed.is_set():
                    log.warning("docker event stream: %s; reconnecting", exc)
            self._closed.wait(1.0)

    def _follow(self) -> None:
        client = self._connect()
        stream = None
        try:
            stream = client.events(decode=True, filters=self._filters)
            with self._lock:
                self._stream = stream
            if self._closed.is_set():  # closed before the stream existed: nobody else will
                return
            self._on_connect()
            for event in stream:
                self._dispatch(event)
        finally:
            if stream is not None:  # its connection is not in the pool client.close() empties
                with contextlib.suppress(Exception):
                    stream.close()
            client.close()

    def _dispatch(self, event: dict[str, Any]) -> None:
        attributes = event.get("Actor", {}).get("Attributes", {})
        worker_id = attributes.get(LABEL_WORKER)
        if event.get("Action") == "die" and worker_id:
            try:
                code = int(attributes.get("exitCode", -1))
            except ValueError:
                code = -1
            self._on_die(worker_id, code)

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):  # a socket already gone is as good
                stream.close()
        self._thread.join(5.0)
