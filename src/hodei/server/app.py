"""The composition root's second half: runs what server.wiring built.

Binds the listeners first (so workers are told the real gRPC port), then starts each component
under one AsyncExitStack: every stop is registered the moment its component has started, and on
shutdown, or when a later start fails, the stops run in reverse order. gRPC (grpc.aio) and HTTP
(uvicorn) share one event loop.
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
from functools import partial
from typing import IO, Any

import grpc
import uvicorn
from grpc_reflection.v1alpha import reflection

from hodei._proto.hodei.v1 import (
    jobs_pb2,
    jobs_pb2_grpc,
    pipelines_pb2,
    pipelines_pb2_grpc,
    schedules_pb2,
    schedules_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)
from hodei.config import ServerSettings, split_addr
from hodei.errors import HodeiError
from hodei.gc_tuning import long_lived_from_here
from hodei.server.api.grpc.guard import MalformedGuard
from hodei.server.api.grpc.job_service import JobService
from hodei.server.api.grpc.pipeline_service import PipelineService
from hodei.server.api.grpc.schedule_service import ScheduleService
from hodei.server.api.grpc.stream_metrics import StreamCounter
from hodei.server.api.grpc.worker_service import WorkerService
from hodei.server.api.http.app import create_http_app
from hodei.server.api.http.dashboard import SecurityHeaders
from hodei.server.api.http.deps import HttpServices
from hodei.server.api.http.http_metrics import HttpMetrics
from hodei.server.api.metrics_listener import MetricsListener
from hodei.server.core.service import LogPiece
from hodei.server.log_format import configure
from hodei.server.security.api_auth import ensure_admin_token
from hodei.server.wiring import Services, Tls, build

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


def loopback_if_any(host: str) -> str:
    """The address a local client dials for a listener on `host` (a wildcard: loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def prepare_tls(settings: ServerSettings, http_port: int) -> Tls:
    # Imported only with --tls: the PKI's modules cost start-up time and memory.
    from hodei.server.security.mtls import prepare_pki

    paths = prepare_pki(settings)
    http_host = loopback_if_any(split_addr(settings.http_addr, 8080)[0])
    http_host = f"[{http_host}]" if ":" in http_host else http_host
    # Local workers enroll over HTTPS with their OTP, trusting this CA.
    agent_env = {
        "HODEI_CA": str(paths.ca_cert),
        "HODEI_CA_PEM": paths.ca_cert.read_text(),  # for containers (no host path there)
        "HODEI_ENROLL_URL": f"https://{http_host}:{http_port}",
    }
    return Tls(paths, agent_env)


def bind_grpc(
    settings: ServerSettings, tls: Tls | None, streams: StreamCounter
) -> tuple[grpc.aio.Server, int]:
    """The gRPC server, listening (its services are added before it starts); `streams`
    counts its open streams."""
    server = grpc.aio.server(options=GRPC_OPTIONS, interceptors=[streams, MalformedGuard()])
    host, port = split_addr(settings.grpc_addr, 50051)
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if tls is not None:
            from hodei.server.security.mtls import grpc_credentials

            bound = server.add_secure_port(target, grpc_credentials(tls.paths))
        else:
            bound = server.add_insecure_port(target)
    except RuntimeError as exc:
        raise HodeiError(f"cannot listen for gRPC on {target}: {exc}") from None
    if bound == 0:
        raise HodeiError(f"cannot listen for gRPC on {target}")
    return server, bound


def add_grpc_services(server: grpc.aio.Server, s: Services) -> None:
    # With --tls the agents' service reads identities from client certificates.
    worker_service: Any = WorkerService
    if s.authority is not None:
        from hodei.server.api.grpc.mtls_worker import MtlsWorkerService

        worker_service = partial(MtlsWorkerService, authority=s.authority)
    workers = worker_service(
        s.otps,
        s.tokens,
        s.registry,
        s.reports,
        s.recovery,
        s.provisioner,
        s.passes,
        s.auditor,
        int(s.settings.heartbeat_interval_s * 1000),
        artifacts=s.artifacts,
        max_artifact_bytes=s.settings.artifact_max_bytes,
    )
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(workers, server)
    jobs_pb2_grpc.add_JobExecutionServiceServicer_to_server(
        JobService(s.api, s.auth, s.auditor), server
    )
    pipelines_pb2_grpc.add_PipelineServiceServicer_to_server(
        PipelineService(s.pipelines, s.auth), server
    )
    schedules_pb2_grpc.add_ScheduleServiceServicer_to_server(
        ScheduleService(s.schedules, s.templates, s.auth), server
    )
    names = (
        worker_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
        jobs_pb2.DESCRIPTOR.services_by_name["JobExecutionService"].full_name,
        pipelines_pb2.DESCRIPTOR.services_by_name["PipelineService"].full_name,
        schedules_pb2.DESCRIPTOR.services_by_name["ScheduleService"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, server)


def http_services(s: Services, started: float) -> HttpServices:
    return HttpServices(
        api=s.api,
        vault=s.vault,
        registry=s.registry,
        provisioner=s.provisioner,
        otps=s.otps,
        auditor=s.auditor,
        auth=s.auth,
        access=s.store,
        metrics=s.metrics,
        started_at=started,
        authority=s.authority,
        pipelines=s.pipelines,
        schedules=s.schedules,
        templates=s.templates,
        bus=s.bus,
        artifacts=s.artifacts,
        links=s.links,
        tls=s.authority is not None,
    )


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the server's own handlers stop everything in order


PIPELINE_UPKEEP_S = 30.0  # how often every active run is looked at, events or not


async def recover(s: Services) -> None:
    """Rebuild the queue from the store; attempts running when the server stopped wait for
    their workers to reconnect (see server.core.recovery)."""
    for job in await s.store.pending_jobs():
        s.scheduler.admit(job)
    await s.recovery.after_restart(provider_prefix=f"{s.provisioner.provider.name}-")


async def start_web(
    stack: contextlib.AsyncExitStack, s: Services, sock: socket.socket, started: float
) -> None:
    app = create_http_app(http_services(s, started))
    tls: dict[str, Any] = {}
    if s.authority is not None:
        from hodei.security.pki_files import PkiPaths

        paths = PkiPaths.of_home(s.settings.home)
        tls = {"ssl_keyfile": str(paths.server_key), "ssl_certfile": str(paths.server_cert)}
    config = uvicorn.Config(
        HttpMetrics(SecurityHeaders(s.auth.middleware(app)), s.metrics.http, s.sse),
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
    task = asyncio.create_task(web.serve(sockets=[sock]))

    async def stop_web() -> None:
        web.should_exit = True
        await task

    stack.push_async_callback(stop_web)


async def start_core(
    stack: contextlib.AsyncExitStack, s: Services, grpc_server: grpc.aio.Server
) -> None:
    """Start every component in dependency order; each stop is registered as it starts."""
    stack.callback(s.tracing.close)  # stopped last: the spans of every stop are sent
    await s.store.open()
    stack.push_async_callback(s.store.close)
    stack.callback(s.hub.close)
    if s.link is not None:
        await s.link.start()
        stack.push_async_callback(s.link.stop)
    stack.push_async_callback(s.background.stop)  # the core's tasks: dispatches, audit writes
    await s.provisioner.provider.start()  # reconcile what an earlier run left behind
    await recover(s)
    stack.push_async_callback(s.recovery.stop)
    s.recovery.start()
    await grpc_server.start()
    stack.push_async_callback(partial(grpc_server.stop, grace=2))
    # Workers stop while gRPC still runs, so their last reports are taken in.
    s.provisioner.start()
    stack.push_async_callback(s.provisioner.stop)
    s.scheduler.start()
    stack.push_async_callback(s.scheduler.stop)
    await s.engine.resume()  # runs a stop left mid-way go on
    s.background.spawn(s.engine.keep_up(PIPELINE_UPKEEP_S, s.settings.artifact_retention_s))
    await s.timer.resume()  # fires a crash left starting, then what came due while down
    s.background.spawn(s.timer.run())


async def _access_lines(s: Services, settings: ServerSettings, http_port: int) -> str:
    """What the ready line's followers say about signing in (API, CLI and dashboard)."""
    host = loopback_if_any(split_addr(settings.http_addr, 8080)[0])
    base = f"{'https' if settings.tls else 'http'}://{host}:{http_port}"
    if settings.dev:
        return f"dev mode: no API tokens (loopback only)\ndashboard: {base}/"
    admin = await ensure_admin_token(s.auth, settings.home)
    code = s.links.mint(admin.read_text().strip())
    return (
        f"API tokens required; admin token in {admin}\n"
        f"dashboard: {base}/login?code={code} (a one-time sign-in link)"
    )


async def serve(
    settings: ServerSettings, ready: asyncio.Event | None = None, freeze_gc: bool = False
) -> None:
    """Run the server until SIGINT/SIGTERM. `freeze_gc` (the `hodei server` process, not a
    test that embeds the server): see long_lived_from_here."""
    started = time.time()
    sock = listen_http(settings.http_addr)
    http_port = sock.getsockname()[1]
    tls = prepare_tls(settings, http_port) if settings.tls else None
    streams = StreamCounter()
    grpc_server, grpc_port = bind_grpc(settings, tls, streams)
    agent_host = loopback_if_any(split_addr(settings.grpc_addr, 50051)[0])
    s = build(settings, f"{agent_host}:{grpc_port}", tls, grpc_streams=streams)
    add_grpc_services(grpc_server, s)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(sock.close)
        await start_core(stack, s, grpc_server)
        await start_web(stack, s, sock, started)
        if settings.metrics_addr:
            host, port = split_addr(settings.metrics_addr, 9464)
            listener = MetricsListener(host, port, s.metrics.render)
            try:
                await listener.start()
            except OSError as exc:
                where = settings.metrics_addr
                raise HodeiError(f"cannot listen for metrics on {where}: {exc}") from None
            stack.push_async_callback(listener.stop)
        access = await _access_lines(s, settings, http_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
            stack.callback(loop.remove_signal_handler, sig)
        scheme = "https" if settings.tls else "http"
        print(
            f"hodei server ready: {scheme}://{split_addr(settings.http_addr, 8080)[0]}:"
            f"{http_port} grpc {agent_host}:{grpc_port} home {settings.home} "
            f"({time.time() - started:.2f}s)",
            file=sys.stderr,
            flush=True,
        )
        print(access, file=sys.stderr, flush=True)
        if ready is not None:
            ready.set()
        if freeze_gc:
            long_lived_from_here()
        if settings.demo:
            demo = asyncio.create_task(run_demo(s, http_port))
            stack.callback(demo.cancel)
        await stop.wait()
        log.info("shutting down")


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
    configure(os.environ.get("HODEI_LOG_LEVEL", "INFO"), settings.log_format)
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
