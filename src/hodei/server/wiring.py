"""The composition root's first half: the only place that knows the concrete adapters.

Builds every component from the settings and hands each one, in its constructor, the
collaborators it uses; nothing is assigned onto a component after it is built. Where several
parties must hear of something, they subscribe here to the event bus. Starting and stopping
them is server.app's part.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil

from hodei.adapters.artifacts.files import FileArtifactStore
from hodei.adapters.logs.files import FileLogStore
from hodei.adapters.providers.local import AdoptHandler, ExitHandler, LocalProvider
from hodei.adapters.store.sqlite import SqliteJobStore
from hodei.agent_bundle import command_in
from hodei.config import ServerSettings, parse_mount
from hodei.domain.scheduling import Policy
from hodei.errors import HodeiError
from hodei.home import server_instance_id
from hodei.ports import ArtifactStore, Cluster, JobStore, WorkerProvider
from hodei.server.api.grpc.stream_metrics import StreamCounter
from hodei.server.api.http.http_metrics import StreamCount
from hodei.server.core.background import Background
from hodei.server.core.bus import (
    EventBus,
    ImageUnavailable,
    JobChanged,
    ProvisioningFailed,
    RunChanged,
    WorkerConnected,
    WorkerExited,
    WorkerProvisioned,
)
from hodei.server.core.cluster import ClusterLink
from hodei.server.core.control import JobControl
from hodei.server.core.dispatch import Dispatcher
from hodei.server.core.loghub import LogHub
from hodei.server.core.metrics import Metrics
from hodei.server.core.orchestrator import Orchestrator
from hodei.server.core.passes import PassSignal
from hodei.server.core.pipelines import PipelineEngine, Pipelines
from hodei.server.core.provisioning import Provisioner
from hodei.server.core.recovery import Recovery
from hodei.server.core.reports import Reports
from hodei.server.core.scheduler import Scheduler
from hodei.server.core.schedules import Launcher, Schedules, ScheduleTimer, Templates
from hodei.server.core.service import JobsApi
from hodei.server.core.tracing import NO_TRACING, Tracing
from hodei.server.core.workers import WorkerRegistry
from hodei.server.metrics_wiring import register_reads
from hodei.server.security.api_auth import ApiAuth
from hodei.server.security.audit import Auditor
from hodei.server.security.otp import OtpRegistry, ResumeTokens
from hodei.server.security.sessions import SignInLinks
from hodei.server.security.vault import SecretVault, load_or_create_key

if TYPE_CHECKING:  # loaded only with --tls (cryptography's x509 costs start-up time and memory)
    from hodei.security.pki_files import PkiPaths
    from hodei.server.security.agent_pki import AgentAuthority


@dataclass(frozen=True, slots=True)
class Tls:
    """With --tls: the home's PKI and what local workers need to enroll over HTTPS."""

    paths: PkiPaths
    agent_env: dict[str, str]


@dataclass(frozen=True, slots=True)
class Services:
    settings: ServerSettings
    store: JobStore
    hub: LogHub
    bus: EventBus
    background: Background  # the core's fire-and-forget tasks (dispatches, audit writes)
    passes: PassSignal
    vault: SecretVault
    otps: OtpRegistry
    tokens: ResumeTokens
    registry: WorkerRegistry
    orchestrator: Orchestrator
    reports: Reports
    scheduler: Scheduler
    control: JobControl
    recovery: Recovery
    provisioner: Provisioner
    api: JobsApi
    metrics: Metrics
    sse: StreamCount  # SSE streams open now (counted by the HTTP metrics middleware)
    auditor: Auditor
    auth: ApiAuth
    link: ClusterLink | None  # on PostgreSQL: the other servers sharing the store
    authority: AgentAuthority | None  # with --tls: the agents' CA
    artifacts: ArtifactStore
    engine: PipelineEngine
    pipelines: Pipelines
    timer: ScheduleTimer
    schedules: Schedules
    templates: Templates
    links: SignInLinks
    tracing: Tracing  # NO_TRACING unless an OTLP endpoint is set


def make_provider(
    settings: ServerSettings,
    on_exit: ExitHandler,
    on_adopt: AdoptHandler | None = None,
    on_end: Callable[[str, int, str], None] | None = None,
) -> WorkerProvider:
    """The worker provider named by the settings (`on_exit(worker_id, code)` when one ends,
    or `on_end(worker_id, code, why)` from a provider that knows why; `on_adopt(worker_id)`
    for each worker of an earlier run it keeps at start)."""
    grace = settings.worker_grace_s
    if settings.provider == "local":
        agent = command_in(settings.local_agent) if settings.local_agent else ()
        return LocalProvider(
            settings.home / "run", on_exit, grace_s=grace, on_adopt=on_adopt, agent_command=agent
        )
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
            job_user=settings.docker_job_user,
        )
        server_id = server_instance_id(settings.home)
        return DockerProvider(options, server_id, on_exit, grace_s=grace, on_adopt=on_adopt)
    if settings.provider == "kubernetes":
        # Imported here: the Kubernetes client (and aiohttp) load only for this provider.
        from hodei.adapters.providers.kubernetes import KubernetesProvider
        from hodei.adapters.providers.kubernetes_api import Connection, KubeApi

        connection = Connection(
            kubeconfig=settings.k8s_kubeconfig,
            context=settings.k8s_context,
            in_cluster=settings.k8s_in_cluster,
        )
        return KubernetesProvider(
            settings.kubernetes_options(),
            KubeApi(connection, settings.k8s_namespace),
            server_instance_id(settings.home),
            on_end or (lambda worker, code, why: on_exit(worker, code)),
            grace_s=grace,
            on_adopt=on_adopt,
        )
    if settings.provider == "microvm":
        from hodei.adapters.providers.microvm import MicrovmProvider
        from hodei.adapters.providers.microvm_firecracker import FirecrackerVmm
        from hodei.adapters.providers.microvm_qemu import QemuVmm

        vm_options = settings.microvm_options()
        vmm: QemuVmm | FirecrackerVmm = (
            QemuVmm(vm_options.qemu_binary)
            if vm_options.vmm == "qemu"
            else FirecrackerVmm(vm_options)
        )
        run_dir = settings.home / "run" / "microvm"
        server_id = server_instance_id(settings.home)
        return MicrovmProvider(vm_options, vmm, run_dir, server_id, on_exit)
    raise HodeiError(f"unknown provider {settings.provider!r}")


def make_store(
    settings: ServerSettings, on_commit: Callable[[float], None] | None = None
) -> JobStore:
    """The job store named by HODEI_DATABASE_URL: SQLite in the home (default) or PostgreSQL;
    `on_commit(seconds)` hears each group commit's duration."""
    if settings.database_kind == "postgresql":
        # Imported here: asyncpg is loaded only by servers that use it.
        from hodei.adapters.store.postgres import PostgresJobStore

        return PostgresJobStore(settings.database_url, on_commit=on_commit)
    return SqliteJobStore(settings.sqlite_path, on_commit=on_commit)


def make_cluster(settings: ServerSettings) -> Cluster | None:
    """On PostgreSQL, the link to the other servers sharing the database; None on SQLite."""
    if settings.database_kind != "postgresql":
        return None
    from hodei.adapters.cluster.postgres import PostgresCluster

    return PostgresCluster(settings.database_url, server_instance_id(settings.home))


def agent_env(settings: ServerSettings, tls: Tls | None) -> dict[str, str]:
    """What provisioned agents need besides the OTP: with --tls the CA to trust and where to
    enroll; with traces on, where to send their own spans."""
    env = dict(tls.agent_env) if tls is not None else {}
    if settings.otlp_endpoint:
        env["HODEI_OTLP_ENDPOINT"] = settings.otlp_endpoint
    return env


def make_tracing(settings: ServerSettings) -> Tracing:
    """OpenTelemetry traces sent to the OTLP endpoint of the settings; none without one (the
    SDK is then not even imported)."""
    if not settings.otlp_endpoint:
        return NO_TRACING
    from hodei.adapters.tracing.otel import OtelTracing
    from hodei.telemetry import make_tracer

    tracer, shutdown = make_tracer(
        "hodei-server", settings.otlp_endpoint, server_instance_id(settings.home)
    )
    return OtelTracing(tracer, shutdown)


def build(
    settings: ServerSettings,
    agent_url: str,
    tls: Tls | None = None,
    grpc_streams: StreamCounter | None = None,
) -> Services:
    """Every component, wired; `agent_url` is the gRPC address local workers dial;
    `grpc_streams` counts the gRPC server's open streams (its interceptor)."""
    home = settings.home
    metrics = Metrics(settings.provider)
    store = make_store(settings, metrics.commit_observed)
    bus = EventBus()
    hub = LogHub(FileLogStore(settings.log_dir), bus)
    # Beside the logs: servers sharing a log directory share the artifacts too.
    artifacts = FileArtifactStore(settings.log_dir / ".artifacts")
    key = load_or_create_key(home / "secret.key")
    vault = SecretVault(store, key)
    auditor = Auditor(store)
    auth = ApiAuth(store, auditor, bus, dev=settings.dev)
    otps = OtpRegistry()
    registry = WorkerRegistry(bus)
    cluster = make_cluster(settings)
    background = Background()
    passes = PassSignal()
    tracing = make_tracing(settings)
    orch = Orchestrator(store, bus, infra_retries=settings.infra_retries, tracing=tracing)
    reports = Reports(
        orch,
        hub,
        passes,
        background,
        auditor,
        settings.retry_backoff_s,
        infra_retries=settings.infra_retries,
        tracing=tracing,
    )
    dispatcher = Dispatcher(
        orch,
        vault,
        reports,
        passes,
        background,
        auditor,
        # Another server may place the same queued job at the same moment: store first.
        send_before_commit=cluster is None,
        max_output_bytes=settings.max_output_bytes,
        tracing=tracing,
    )
    provider = make_provider(
        settings,
        lambda worker, code: bus.publish(WorkerExited(worker, code)),
        # A worker of an earlier run the provider keeps (at its start, before any agent
        # connects, so the provisioner exists by then).
        lambda worker: provisioner.adopted(worker),
        # What a provider knows of why a worker ended (a pod OOMKilled, evicted, deleted)
        # goes into its jobs' reasons.
        on_end=lambda worker, code, why: bus.publish(WorkerExited(worker, code, why)),
    )
    provisioner = Provisioner(
        provider,
        otps,
        registry,
        bus,
        agent_url,
        settings.max_workers,
        settings.worker_slots,
        settings.worker_idle_s,
        settings.otp_ttl_s,
        # Local and Docker workers run on this host: no worker can be bigger than it. A
        # Kubernetes node's size is the scheduler's to judge (0: unknown; its refusal, in
        # its own words, is the provider's start error).
        max_cpus=0.0 if settings.provider == "kubernetes" else float(psutil.cpu_count() or 0),
        max_memory=0 if settings.provider == "kubernetes" else psutil.virtual_memory().total,
        agent_env=agent_env(settings, tls),
        passes=passes,
        # Kubernetes: job labels mapped to node selectors give their worker those labels.
        label_keys=settings.k8s_label_keys,
        tracing=tracing,
    )
    scheduler = Scheduler(
        orch,
        registry,
        dispatcher,
        provisioner,
        passes,
        background,
        policy=Policy(settings.scheduling_policy),
        aging_s=settings.priority_aging_s,
        tracing=tracing,
    )
    control = JobControl(orch, store, registry, bus, settings.cancel_grace_s)
    engine = PipelineEngine(
        store, orch, control.cancel, artifacts, bus, background, tracing=tracing
    )
    pipelines = Pipelines(store, engine, auditor)
    launcher = Launcher(orch, pipelines)
    timer = ScheduleTimer(store, launcher, control.cancel, pipelines.cancel, auditor)
    schedules = Schedules(store, timer, auditor, min_interval_s=settings.schedule_min_interval_s)
    recovery = Recovery(registry, reports, control, store, passes, settings.worker_grace_s, cluster)
    sse = StreamCount()
    register_reads(metrics, scheduler, registry, hub, sse, grpc_streams)
    bus.subscribe(JobChanged, scheduler.on_job_changed)
    bus.subscribe(ImageUnavailable, scheduler.on_image_unavailable)
    bus.subscribe(JobChanged, lambda e: hub.job_changed(e.job))
    bus.subscribe(JobChanged, metrics.on_job_changed)
    if tracing.on:  # off: not even a call per change
        bus.subscribe(JobChanged, tracing.on_job_changed)
    bus.subscribe(WorkerProvisioned, metrics.on_provisioned)
    bus.subscribe(ProvisioningFailed, metrics.on_provisioning_failed)
    bus.subscribe(RunChanged, metrics.on_run_changed)
    bus.subscribe(JobChanged, engine.on_job_changed)
    bus.subscribe(JobChanged, timer.on_job_changed)
    bus.subscribe(WorkerExited, lambda e: provisioner.exited(e.worker_id, e.code))
    bus.subscribe(WorkerExited, lambda e: recovery.process_exited(e.worker_id, detail=e.why))
    bus.subscribe(WorkerConnected, lambda e: provider.connected(e.worker_id))
    link = None
    if cluster is not None:
        link = ClusterLink(
            cluster, store, bus, hub, reports, control, registry, auth, settings.worker_grace_s
        )
    authority = None
    if tls is not None:
        from hodei.server.security.agent_pki import AgentAuthority

        authority = AgentAuthority(tls.paths, otps, settings.cert_lifetime_s, recovery)
    return Services(
        settings=settings,
        store=store,
        hub=hub,
        bus=bus,
        background=background,
        passes=passes,
        vault=vault,
        otps=otps,
        tokens=ResumeTokens(key),
        registry=registry,
        orchestrator=orch,
        reports=reports,
        scheduler=scheduler,
        control=control,
        recovery=recovery,
        provisioner=provisioner,
        api=JobsApi(orch, store, scheduler, control, hub),
        metrics=metrics,
        sse=sse,
        auditor=auditor,
        auth=auth,
        link=link,
        authority=authority,
        artifacts=artifacts,
        engine=engine,
        pipelines=pipelines,
        timer=timer,
        schedules=schedules,
        templates=Templates(store, launcher, auditor),
        links=SignInLinks(),
        tracing=tracing,
    )
