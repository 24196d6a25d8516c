"""The composition root's part of the metrics: the gauges read when Prometheus scrapes, each
from the component that knows (the queue, the worker registry, the log hub, the streams)."""

from __future__ import annotations

from collections import Counter

from hodei.domain.jobs import JobState
from hodei.server.api.grpc.stream_metrics import StreamCounter
from hodei.server.api.http.http_metrics import StreamCount
from hodei.server.core.loghub import LogHub
from hodei.server.core.metrics import Metrics, provider_label
from hodei.server.core.scheduler import Scheduler
from hodei.server.core.workers import WorkerRegistry, WorkerSession

WORKER_STATES = ("idle", "busy", "draining", "disconnected")


def worker_state(session: WorkerSession) -> str:
    if session.closed:
        return "disconnected"
    if not session.view.accepting:
        return "draining"
    return "busy" if session.jobs else "idle"


def register_reads(
    metrics: Metrics,
    scheduler: Scheduler,
    registry: WorkerRegistry,
    hub: LogHub,
    sse: StreamCount,
    grpc_streams: StreamCounter | None,
) -> None:
    metrics.gauge("hodei_jobs_queued", "Jobs waiting for a worker", lambda: scheduler.queued_count)
    metrics.gauge("hodei_workers_connected", "Connected workers", lambda: len(registry))

    def jobs_by_state() -> dict[tuple[str, ...], float]:
        held = Counter(h.job.state for s in registry.sessions() for h in s.jobs.values())
        return {
            (JobState.QUEUED.value,): float(scheduler.queued_count),
            (JobState.ASSIGNED.value,): float(held[JobState.ASSIGNED]),
            (JobState.RUNNING.value,): float(held[JobState.RUNNING]),
        }

    def workers() -> dict[tuple[str, ...], float]:
        counts = Counter((provider_label(s.provider), worker_state(s)) for s in registry.sessions())
        return {key: float(n) for key, n in counts.items()}

    metrics.labelled(
        "hodei_jobs", "Jobs active on this server, by state", ("state",), jobs_by_state
    )
    metrics.labelled(
        "hodei_workers",
        "Workers known to this server, by provider and state",
        ("provider", "state"),
        workers,
    )
    metrics.labelled(
        "hodei_log_received_bytes",
        "Log bytes stored from agents",
        (),
        lambda: {(): float(hub.bytes_in)},
        kind="counter",
    )
    metrics.labelled(
        "hodei_log_sent_bytes",
        "Log bytes served to readers and live followers",
        (),
        lambda: {(): float(hub.bytes_out)},
        kind="counter",
    )
    metrics.gauge("hodei_log_followers", "Live log followers attached", lambda: hub.followers)
    metrics.gauge("hodei_sse_streams_open", "SSE streams open (logs, job events)", lambda: sse.open)
    if grpc_streams is not None:
        metrics.labelled(
            "hodei_grpc_streams_open",
            "Response-streaming gRPC calls open, by method",
            ("method",),
            lambda: {(m,): float(n) for m, n in grpc_streams.open.items()},
        )
