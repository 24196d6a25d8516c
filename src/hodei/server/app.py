"""The composition root: the only place that knows the concrete adapters.

Builds the store, log store, bus, orchestrator, scheduler, provisioner and both APIs from the
settings, runs gRPC (grpc.aio) and HTTP (uvicorn) in one event loop, and shuts down in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import IO, TYPE_CHECKING, Any

import grpc
import psutil
import uvicorn
from grpc_reflection.v1alpha import reflection

from hodei._proto.hodei.v1 import jobs_pb2, jobs_pb2_grpc, worker_pb2, worker_pb2_grpc
from hodei.adapters.logs.files import FileLogStore
from hodei.adapters.providers.local import ExitHandler, LocalProvider
from hodei.adapters.store.sqlite import SqliteJobStore
from hodei.config import ServerSettings, parse_mount, split_addr
from hodei.domain.scheduling import Policy
from hodei.errors import HodeiError
from hodei.gc_tuning import long_lived_from_here
from hodei.home import server_instance_id
from hodei.ports import JobStore, WorkerProvider
from hodei.server.api.grpc.guard import MalformedGuard
from hodei.server.api.grpc.job_service import JobService
from hodei.server.api.grpc.worker_service import WorkerService
from hodei.server.api.http.access import add_access_routes
from hodei.server.api.http.app import create_http_app
from hodei.server.api.http.pki import add_pki_routes
from hodei.server.core.bus import EventBus
from hodei.server.core.cluster import ClusterLink
from hodei.server.core.loghub import LogHub
from hodei.server.core.metrics import Metrics
from hodei.server.core.orchestrator import Orchestrator
from hodei.server.core.provisioning import Provisioner
from hodei.server.core.recovery import Recovery
from hodei.server.core.scheduler import Scheduler
from hodei.server.core.service import JobsApi, LogPiece
from hodei.server.core.workers import WorkerRegistry
from hodei.server.security.api_auth import ApiAuth, ensure_admin_token
from hodei.server.security.audit import Auditor
from hodei.server.security.otp import OtpRegistry, ResumeTokens
from hodei.server.security.vault import SecretVault, load_or_create_key

if TYPE_CHECKING:
    from hodei.server.security.agent_pki import AgentAuthority

log = logging.getLogger("hodei.server")

GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    # Agents ping every 10 s; admit that rate so the server never answers with GOAWAY.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


@dataclass
class Services:
    settings: ServerSettings
    store: JobStore
    hub: LogHub
    bus: EventBus
    vault: SecretVault
    otps: OtpRegistry
    tokens: ResumeTokens
    registry: WorkerRegistry
    orchestrator: Orchestrator
    scheduler: Scheduler
    recovery: Recovery
    provisioner: Provisioner
    api: JobsApi
    metrics: Metrics
    auditor: Auditor
    auth: ApiAuth
    authority: AgentAuthority | None = None  # with --tls: the agents' CA (agent_pki)


def make_provider(settings: ServerSettings, on_exit: ExitHandler) -> WorkerProvider:
    """The worker provider named by the settings (`on_exit(worker_id, code)` when one ends)."""
    if settings.provider == "local":
        return LocalProvider(settings.home / "run", on_exit=on_exit)
    if settings.provider == "docker":
        # Imported here: the Docker SDK (and requests) cost start-up time other providers skip.
        from hodei.adapters.providers.docker import DockerOptions, DockerProvider

        options = DockerOptions(
            image=settings.worker_image,
            network=settings.docker_network,
            server_url=settings.docker_server_url,
            privileged=settings.docker_privileged,
            docker_socket=settings.docker_socket,
            mounts=tuple(parse_mount(m) for m in settings.docker_mounts),
        )
        return DockerProvider(options, server_instance_id(settings.home), on_exit)
    raise HodeiError(f"unknown provider {settings.provider!r}")


def make_store(settings: ServerSettings) -> JobStore:
    """The job store named by HODEI_DATABASE_URL: SQLite in the home (default) or PostgreSQL."""
    if settings.database_kind == "postgresql":
        # Imported here: asyncpg is loaded only by servers that use it.
        from hodei.adapters.store.postgres import PostgresJobStore

        return PostgresJobStore(settings.database_url)
    return SqliteJobStore(settings.sqlite_path)


def build(settings: ServerSettings, grpc_target: str) -> Services:
    home = settings.home
    store = make_store(settings)
    hub = LogHub(FileLogStore(settings.log_dir))
    bus = EventBus()
    key = load_or_create_key(home / "secret.key")
    vault = SecretVault(store, key)
    otps = OtpRegistry()
    registry = WorkerRegistry()
    orch = Orchestrator(store, bus, vault)
    scheduler = Scheduler(
        orch,
        registry,
        hub,
        cancel_grace_s=settings.cancel_grace_s,
        policy=Policy(settings.scheduling_policy),
        aging_s=settings.priority_aging_s,
        retry_backoff_s=settings.retry_backoff_s,
    )
    recovery = Recovery(scheduler, registry, settings.worker_grace_s)

    def worker_exited(worker_id: str, code: int) -> None:
        provisioner.exited(worker_id, code)
        recovery.process_exited(worker_id)

    provider = make_provider(settings, worker_exited)
    provisioner = Provisioner(
        provider,
        otps,
        registry,
        grpc_target,
        settings.max_workers,
        settings.worker_slots,
        settings.worker_idle_s,
        settings.otp_ttl_s,
        # Providers here start workers on this host: no worker can be bigger than it.
        max_cpus=float(psutil.cpu_count() or 0),
        max_memory=psutil.virtual_memory().total,
    )
    scheduler.demand = provisioner.demand
    scheduler.dispatcher.max_output_bytes = settings.max_output_bytes
    scheduler.can_grow = provisioner.can_grow
    scheduler.note = provisioner.note
    scheduler.fits = provisioner.fits
    scheduler.ceiling = provisioner.ceiling
    metrics = Metrics()
    metrics.gauge("hodei_jobs_queued", "Jobs waiting for a worker", lambda: scheduler.queued_count)
    metrics.gauge("hodei_workers_connected", "Connected workers", lambda: len(registry))
    bus.subscribe(scheduler.on_job_changed)
    bus.subscribe(lambda e: hub.job_changed(e.job))
    bus.subscribe(metrics.on_job_changed)
    api = JobsApi(orch, scheduler, hub)
    auditor = Auditor(store)
    scheduler.set_auditor(auditor)
    return Services(
        settings,
        store,
        hub,
        bus,
        vault,
        otps,
        ResumeTokens(key),
        registry,
        orch,
        scheduler,
        recovery,
        provisioner,
        api,
        metrics,
        auditor,
        ApiAuth(store, auditor, dev=settings.dev),
    )


async def recover(s: Services) -> None:
    """Rebuild the queue from the store; attempts running when the server stopped wait for
    their workers to reconnect (see server.core.recovery)."""
    for job in await s.store.pending_jobs():
        s.scheduler.admit(job)
    await s.recovery.after_restart(provider_prefix=f"{s.provisioner.provider.name}-")


@contextlib.contextmanager
def home_lock(settings: ServerSettings) -> Iterator[None]:
    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock: IO[str] = open(settings.home / "server.lock", "w")  # noqa: SIM115
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise HodeiError(
            f"another hodei server is already using {settings.home} (set HODEI_HOME to run a "
            "second one)"
        ) from None
    try:
        lock.write(str(os.getpid()))
        lock.flush()
        yield
    finally:
        lock.close()


def listen_http(addr: str) -> socket.socket:
    host, port = split_addr(addr, 8080)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise HodeiError(f"cannot listen for HTTP on {addr}: {exc.strerror}") from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the server's own handlers stop everything in order


def start_grpc(s: Services) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=GRPC_OPTIONS, interceptors=[MalformedGuard()])
    # With --tls the agents' service reads identities from client certificates.
    worker_service = None
    if s.authority is not None:
        from hodei.server.api.grpc.mtls_worker import MtlsWorkerService

        worker_service = partial(MtlsWorkerService, authority=s.authority)
    workers = (worker_service or WorkerService)(
        s.otps,
        s.tokens,
        s.registry,
        s.scheduler,
        s.recovery,
        s.hub,
        s.provisioner,
        int(s.settings.heartbeat_interval_s * 1000),
    )
    workers.auditor = s.auditor
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(workers, server)
    jobs_pb2_grpc.add_JobExecutionServiceServicer_to_server(
        JobService(s.api, s.auth, s.auditor), server
    )
    names = (
        worker_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
        jobs_pb2.DESCRIPTOR.services_by_name["JobExecutionService"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, server)
    host, port = split_addr(s.settings.grpc_addr, 50051)
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if s.authority is not None:
            from hodei.security.pki_files import PkiPaths
            from hodei.server.security.mtls import grpc_credentials

            paths = PkiPaths.of_home(s.settings.home)
            bound = server.add_secure_port(target, grpc_credentials(paths))
        else:
            bound = server.add_insecure_port(target)
    except RuntimeError as exc:
        raise HodeiError(f"cannot listen for gRPC on {target}: {exc}") from None
    if bound == 0:
        raise HodeiError(f"cannot listen for gRPC on {target}")
    return server, bound


async def serve(
    settings: ServerSettings, ready: asyncio.Event | None = None, freeze_gc: bool = False
) -> None:
    """Run the server until SIGINT/SIGTERM. `freeze_gc` (the `hodei server` process, not a
    test that embeds the server): see long_lived_from_here."""
    started = time.time()
    host, port = split_addr(settings.grpc_addr, 50051)
    agent_host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    s = build(settings, f"{agent_host}:{port}")
    sock = listen_http(settings.http_addr)
    http_port = sock.getsockname()[1]
    tls: dict[str, Any] = {}
    if settings.tls:
        # Imported only with --tls: the PKI's modules cost start-up time and memory.
        from hodei.server.security.agent_pki import AgentAuthority
        from hodei.server.security.mtls import prepare_pki

        paths = prepare_pki(settings)
        s.authority = AgentAuthority(
            paths, s.otps, settings.cert_lifetime_s, s.registry, s.recovery
        )
        tls = {"ssl_keyfile": str(paths.server_key), "ssl_certfile": str(paths.server_cert)}
        http_host = split_addr(settings.http_addr, 8080)[0]
        http_host = "127.0.0.1" if http_host in ("0.0.0.0", "", "::") else http_host
        http_host = f"[{http_host}]" if ":" in http_host else http_host
        # Local workers enroll over HTTPS with their OTP, trusting this CA.
        s.provisioner.agent_env = {
            "HODEI_CA": str(paths.ca_cert),
            "HODEI_CA_PEM": paths.ca_cert.read_text(),  # for containers (no host path there)
            "HODEI_ENROLL_URL": f"https://{http_host}:{http_port}",
        }
    await s.store.open()
    link = await join_cluster(s)
    grpc_server, grpc_port = start_grpc(s)
    if port == 0:  # an ephemeral port (tests): tell agents the real one
        s.provisioner.server_url = f"{agent_host}:{grpc_port}"
    await s.provisioner.provider.start()
    await recover(s)
    await grpc_server.start()
    s.scheduler.start()
    s.provisioner.start()
    app = create_http_app(s.api, s, s.metrics, started)
    add_pki_routes(app, s.authority, s.auditor)
    add_access_routes(app, s.auth, s.auditor)
    if settings.dev:
        access = "dev mode: no API tokens (loopback only)"
    else:
        access = (
            f"API tokens required; admin token in {await ensure_admin_token(s.auth, settings.home)}"
        )
    config = uvicorn.Config(
        s.auth.middleware(app),
        lifespan="off",
        log_level="warning",
        access_log=False,
        # The server is not behind a proxy it knows of: X-Forwarded-For from a local process
        # would otherwise choose the address OTP failures are limited and audited by.
        proxy_headers=False,
        timeout_graceful_shutdown=2,
        **tls,
    )
    web = _Uvicorn(config)
    web_task = asyncio.create_task(web.serve(sockets=[sock]))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    scheme = "https" if settings.tls else "http"
    print(
        f"hodei server ready: {scheme}://{split_addr(settings.http_addr, 8080)[0]}:{http_port} "
        f"grpc {agent_host}:{grpc_port} home {settings.home} "
        f"({time.time() - started:.2f}s)",
        file=sys.stderr,
        flush=True,
    )
    print(access, file=sys.stderr, flush=True)
    if ready is not None:
        ready.set()
    if freeze_gc:
        long_lived_from_here()
    demo = asyncio.create_task(run_demo(s, http_port)) if settings.demo else None
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        if demo:
            demo.cancel()
        web.should_exit = True
        await s.provisioner.stop()
        await grpc_server.stop(grace=2)
        await s.recovery.stop()
        await s.scheduler.stop()
        await web_task
        if link is not None:
            await link.stop()
        s.hub.close()
        await s.store.close()


async def join_cluster(s: Services) -> ClusterLink | None:
    """On PostgreSQL, join the other servers sharing the database (see server.core.cluster)."""
    settings = s.settings
    if settings.database_kind != "postgresql":
        return None
    from hodei.adapters.cluster.postgres import PostgresCluster

    cluster = PostgresCluster(settings.database_url, server_instance_id(settings.home))
    link = ClusterLink(
        cluster, s.store, s.bus, s.hub, s.scheduler, s.registry, s.auth, settings.worker_grace_s
    )
    # Another server may place the same queued job at the same moment: store first, then send.
    s.scheduler.dispatcher.send_before_commit = False
    s.recovery.workers_elsewhere = link.others_workers
    await link.start()
    return link


async def run_demo(s: Services, http_port: int) -> None:
    from hodei.server.demo import demo_job

    job = await s.api.submit(demo_job())
    out = sys.stdout.buffer
    out.write(f"\n== demo job {job.id}: live logs ==\n".encode())
    async for piece in s.api.follow(job.id, None, 0):
        if isinstance(piece, LogPiece):
            out.write(piece.data)
            out.flush()
        else:
            out.write(
                f"== demo job {piece.id} {piece.state.value} (exit code {piece.exit_code}) ==\n"
                f"Try: hodei submit -f -- sh -c 'echo hello; exit 3'   (server on port "
                f"{http_port}; Ctrl-C stops it)\n".encode()
            )
            out.flush()


def run_server(settings: ServerSettings) -> int:
    logging.basicConfig(
        level=os.environ.get("HODEI_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run  # type: ignore[assignment]
    try:
        with home_lock(settings):
            runner(serve(settings, freeze_gc=True))
    except HodeiError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
