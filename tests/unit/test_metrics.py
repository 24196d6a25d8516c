"""The server's metrics: what the bus events of a job's life and of provisioning observe, and
the HTTP middleware's labels (a route template, never an id)."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI
from prometheus_client.utils import floatToGoString

from hodei.adapters.store.memory import MemoryJobStore
from hodei.domain.attempts import AttemptState, Failure, ResourceUse
from hodei.domain.jobs import JobSpec, JobState
from hodei.ports import WorkerLaunch
from hodei.server.api.http.http_metrics import HttpMetrics, StreamCount
from hodei.server.core.bus import EventBus, JobChanged, ProvisioningFailed, WorkerProvisioned
from hodei.server.core.metrics import Metrics
from hodei.server.core.orchestrator import Orchestrator
from hodei.server.core.provisioning import Provisioner
from hodei.server.core.workers import WorkerRegistry
from hodei.server.security.otp import OtpRegistry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def world() -> tuple[Clock, Metrics, Orchestrator]:
    clock = Clock()
    bus = EventBus()
    metrics = Metrics(clock=clock)
    bus.subscribe(JobChanged, metrics.on_job_changed)
    store = MemoryJobStore()
    await store.open()
    return clock, metrics, Orchestrator(store, bus, clock=clock)


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_a_jobs_phases_are_observed_from_its_attempt_records() -> None:
    clock, metrics, orch = await world()
    job = await orch.submit(JobSpec(command="true"))
    clock.now += 2.5
    job = await orch.move(job, JobState.ASSIGNED, worker_id="w1", attempts=1)
    clock.now += 0.25
    job = await orch.move(job, JobState.RUNNING, started_at=clock.now)
    clock.now += 4.0
    await orch.finish(job, JobState.SUCCEEDED, 0, "")
    assert value(metrics, "hodei_jobs_submitted_total") == 1
    assert value(metrics, "hodei_jobs_dispatched_total") == 1
    assert value(metrics, "hodei_job_queue_wait_seconds_count") == 1
    assert value(metrics, "hodei_job_queue_wait_seconds_sum") == 2.5
    assert value(metrics, "hodei_job_start_latency_seconds_sum") == 0.25
    assert value(metrics, "hodei_attempt_run_seconds_sum", outcome="succeeded") == 4.0
    assert value(metrics, "hodei_attempts_total", outcome="succeeded", failure="") == 1
    assert value(metrics, "hodei_jobs_finished_total", state="succeeded") == 1
    assert metrics._queued_since == {} and metrics._assigned_at == {}  # nothing kept


async def test_what_attempts_used_is_observed_by_outcome() -> None:
    _, metrics, orch = await world()
    measured = ResourceUse(1.5, 200 << 20, 4096, 8192)
    for n, (target, use) in enumerate(
        [
            (JobState.SUCCEEDED, measured),
            (JobState.FAILED, ResourceUse(0.5, 3 << 20)),
            (JobState.SUCCEEDED, None),
        ]
    ):
        job = await orch.submit(JobSpec(command="true", name=f"j{n}"))
        job = await orch.move(job, JobState.ASSIGNED, worker_id="w1", attempts=1)
        job = await orch.move(job, JobState.RUNNING, started_at=1.0)
        await orch.move(job, target, usage=use, exit_code=0, finished_at=2.0)
    assert value(metrics, "hodei_attempt_cpu_seconds_count", outcome="succeeded") == 1  # 1 measured
    assert value(metrics, "hodei_attempt_cpu_seconds_sum", outcome="succeeded") == 1.5
    assert value(metrics, "hodei_attempt_cpu_seconds_sum", outcome="failed") == 0.5
    assert value(metrics, "hodei_attempt_peak_memory_bytes_sum", outcome="succeeded") == 200 << 20
    bucket = {"outcome": "succeeded", "le": floatToGoString(256 << 20)}
    assert value(metrics, "hodei_attempt_peak_memory_bytes_bucket", **bucket) == 1
    assert value(metrics, "hodei_attempt_io_bytes_total", direction="read") == 4096  # io: 1 only
    assert value(metrics, "hodei_attempt_io_bytes_total", direction="write") == 8192


async def test_a_retry_waits_from_the_end_of_its_backoff_and_failures_are_by_kind() -> None:
    clock, metrics, orch = await world()
    job = await orch.submit(JobSpec(command="false", max_retries=1))
    job = await orch.move(job, JobState.ASSIGNED, worker_id="w1", attempts=1)
    job = await orch.move(job, JobState.RUNNING, started_at=clock.now)
    clock.now += 1.0
    job = await orch.move(
        job,
        JobState.QUEUED,
        AttemptState.FAILED,
        Failure.WORKER_LOST,
        worker_id=None,
        started_at=None,
        not_before=clock.now + 10.0,
    )
    clock.now += 12.0  # placed 2 s after its backoff ended
    job = await orch.move(job, JobState.ASSIGNED, worker_id="w2", attempts=2)
    assert value(metrics, "hodei_job_queue_wait_seconds_count") == 2
    assert value(metrics, "hodei_job_queue_wait_seconds_sum") == 2.0
    assert value(metrics, "hodei_attempts_total", outcome="failed", failure="worker_lost") == 1
    assert value(metrics, "hodei_attempt_run_seconds_count", outcome="failed") == 1
    await orch.finish(job, JobState.CANCELLED, None, "cancelled")
    assert value(metrics, "hodei_attempts_total", outcome="cancelled", failure="job") == 1
    assert metrics._queued_since == {} and metrics._assigned_at == {}


class BrokenProvider:
    name = "docker"
    runs_images = False

    async def start(self) -> None: ...

    def connected(self, worker_id: str) -> None: ...

    async def provision(self, launch: WorkerLaunch) -> None:
        raise RuntimeError("the engine is not answering")

    async def terminate(self, worker_id: str) -> None: ...

    async def stop(self) -> None: ...


async def test_a_failed_launch_counts_by_provider_and_reason() -> None:
    bus = EventBus()
    metrics = Metrics()
    bus.subscribe(ProvisioningFailed, metrics.on_provisioning_failed)
    bus.subscribe(WorkerProvisioned, metrics.on_provisioned)
    prov = Provisioner(
        BrokenProvider(), OtpRegistry(), WorkerRegistry(bus), bus, "127.0.0.1:1", 4, 1, 30.0
    )
    from hodei.domain.jobs import Job

    assert prov.demand([Job("j1", JobSpec(command="true"))]) == "a worker is starting"
    for _ in range(10):  # the launch runs in a task of its own
        await asyncio.sleep(0)
    failed = "hodei_provisioning_failures_total"
    assert value(metrics, failed, provider="docker", reason="start_failed") == 1
    assert "the engine is not answering" in prov.last_error
    bus.publish(WorkerProvisioned("mine", 1.5))  # an unknown provider name: bounded label
    assert value(metrics, "hodei_provisioning_seconds_sum", provider="other") == 1.5


async def test_http_requests_are_labelled_by_route_template_and_status_class() -> None:
    app = FastAPI()

    @app.get("/api/v1/jobs/{job_id}")
    async def show(job_id: str) -> dict[str, str]:
        return {"id": job_id}

    metrics = Metrics()
    wrapped = HttpMetrics(app, metrics.http, StreamCount())
    transport = httpx.ASGITransport(app=wrapped)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for job_id in ("a1", "b2", "c3"):
            assert (await client.get(f"/api/v1/jobs/{job_id}")).status_code == 200
        assert (await client.get("/nowhere")).status_code == 404
    count = "hodei_http_request_duration_seconds_count"
    assert value(metrics, count, method="GET", route="/api/v1/jobs/{job_id}", status="2xx") == 3
    assert value(metrics, count, method="GET", route="unmatched", status="4xx") == 1
    assert b"a1" not in metrics.render()


def test_the_tokenless_metrics_listener_is_loopback_only() -> None:
    import pytest

    from hodei.config import ServerSettings
    from hodei.errors import ValidationError

    assert ServerSettings(metrics_addr="127.0.0.1:9464").validate().metrics_addr
    with pytest.raises(ValidationError, match="loopback address only"):
        ServerSettings(metrics_addr="0.0.0.0:9464").validate()
