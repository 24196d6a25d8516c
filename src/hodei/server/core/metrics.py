"""Prometheus metrics, in a registry of this server's own (no global state).

Every metric object is created once, here; the hot path only observes (a child per label
value, cached). Labels are bounded sets (states, outcomes, failure kinds, provider names,
route templates): never a job or worker id. What each series means is in docs/metrics.md.

Counters and histograms are fed by bus events (`on_job_changed`, `on_provisioned`, ...);
gauges are read when Prometheus scrapes, from callables the composition root registers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hodei.domain.attempts import AttemptState, Failure
from hodei.domain.jobs import JobState
from hodei.server.core.bus import JobChanged, ProvisioningFailed, RunChanged, WorkerProvisioned
from hodei.server.core.provisioning import FAILURE_REASONS

# Seconds; each histogram spans what its phase takes in practice.
QUEUE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
START_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
RUN_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600)
PROVISION_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
CPU_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
MEMORY_BUCKETS = tuple(float(1 << n) for n in range(20, 38, 2))  # 1 MiB .. 128 GiB, x4
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 300)

# The provider label takes these values (and "other"): a worker's provider is what its agent
# said at registration, so it is bounded here.
PROVIDERS = frozenset({"local", "docker", "kubernetes", "static"})
ACTIVE_STATES = (JobState.QUEUED, JobState.ASSIGNED, JobState.RUNNING)


def provider_label(name: str) -> str:
    return name if name in PROVIDERS else "other"


class _Reads(Collector):
    """Gauges and counters read at scrape time: name -> (kind, doc, labels, read), where read
    gives {label values: value} (the empty tuple for an unlabelled one)."""

    def __init__(self) -> None:
        self.sources: dict[
            str, tuple[str, str, tuple[str, ...], Callable[[], dict[tuple[str, ...], float]]]
        ] = {}

    def collect(self) -> Iterator[Metric]:
        for name, (kind, doc, labels, read) in self.sources.items():
            family: GaugeMetricFamily | CounterMetricFamily
            if kind == "counter":
                family = CounterMetricFamily(name, doc, labels=labels)
            else:
                family = GaugeMetricFamily(name, doc, labels=labels)
            for values, value in read().items():
                family.add_metric(list(values), value)
            yield family


class Metrics:
    def __init__(self, provider: str = "", clock: Callable[[], float] = time.time) -> None:
        """`provider`: the server's worker provider, whose series start at zero."""
        self._clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.submitted = Counter("hodei_jobs_submitted", "Jobs accepted", registry=r)
        self.finished = Counter(
            "hodei_jobs_finished", "Jobs that reached an end state", ["state"], registry=r
        )
        self.dispatched = Counter("hodei_jobs_dispatched", "Attempts sent to workers", registry=r)
        self.queue_wait = Histogram(
            "hodei_job_queue_wait_seconds",
            "From queued (or the end of a retry's backoff) to assigned, per attempt",
            registry=r,
            buckets=QUEUE_BUCKETS,
        )
        self.start_latency = Histogram(
            "hodei_job_start_latency_seconds",
            "From assigned to running (the agent started the job), per attempt",
            registry=r,
            buckets=START_BUCKETS,
        )
        self.run_time = Histogram(
            "hodei_attempt_run_seconds",
            "From running to the attempt's end, by outcome",
            ["outcome"],
            registry=r,
            buckets=RUN_BUCKETS,
        )
        self.attempt_cpu = Histogram(
            "hodei_attempt_cpu_seconds",
            "CPU seconds (user + system) an attempt used, as its agent measured it, by outcome",
            ["outcome"],
            registry=r,
            buckets=CPU_BUCKETS,
        )
        self.attempt_memory = Histogram(
            "hodei_attempt_peak_memory_bytes",
            "Peak memory of an attempt (its cgroup's high-water mark, or its processes' RSS)",
            ["outcome"],
            registry=r,
            buckets=MEMORY_BUCKETS,
        )
        self.attempt_io = Counter(
            "hodei_attempt_io_bytes",
            "Bytes ended attempts read and wrote, as their agents measured them",
            ["direction"],
            registry=r,
        )
        self.attempts = Counter(
            "hodei_attempts",
            "Attempts that ended, by outcome and by whose fault (failure) when not succeeded",
            ["outcome", "failure"],
            registry=r,
        )
        self.provisioning = Histogram(
            "hodei_provisioning_seconds",
            "From asking the provider for a worker to its registration, by provider",
            ["provider"],
            registry=r,
            buckets=PROVISION_BUCKETS,
        )
        self.provisioning_failures = Counter(
            "hodei_provisioning_failures",
            "Worker launches that came to nothing, by provider and reason",
            ["provider", "reason"],
            registry=r,
        )
        self.store_commit = Histogram(
            "hodei_store_commit_seconds",
            "One group commit of the job store (every write waiting in it shares it)",
            registry=r,
            buckets=COMMIT_BUCKETS,
        )
        self.http = Histogram(
            "hodei_http_request_duration_seconds",
            "HTTP requests by method, route template and status class (an SSE stream: its life)",
            ["method", "route", "status"],
            registry=r,
            buckets=HTTP_BUCKETS,
        )
        self.pipeline_runs = Counter(
            "hodei_pipeline_runs_finished",
            "Pipeline runs that ended, by state",
            ["state"],
            registry=r,
        )
        for state in ("succeeded", "failed", "cancelled"):
            self.pipeline_runs.labels(state)
        if provider:
            self.provisioning.labels(provider_label(provider))
            for reason in FAILURE_REASONS:
                self.provisioning_failures.labels(provider_label(provider), reason)
        self._reads = _Reads()
        r.register(self._reads)
        # Children made once per label value: labels() costs a lock and a dict walk.
        self._run_time = {s: self.run_time.labels(s.value) for s in AttemptState if s.over}
        self._cpu = {s: self.attempt_cpu.labels(s.value) for s in AttemptState if s.over}
        self._memory = {s: self.attempt_memory.labels(s.value) for s in AttemptState if s.over}
        self._read, self._written = self.attempt_io.labels("read"), self.attempt_io.labels("write")
        self._attempts: dict[tuple[AttemptState, Failure | None], Counter] = {}
        # When each local job entered the queue (for this attempt) and was assigned: bounded
        # by the jobs active here, each entry dropped as its job moves on.
        self._queued_since: dict[str, float] = {}
        self._assigned_at: dict[str, float] = {}

    # ---- read at scrape time -----------------------------------------------------------------
    def gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        self._reads.sources[name] = ("gauge", doc, (), lambda: {(): read()})

    def labelled(
        self,
        name: str,
        doc: str,
        labels: tuple[str, ...],
        read: Callable[[], dict[tuple[str, ...], float]],
        kind: str = "gauge",
    ) -> None:
        """A gauge (or, with kind="counter", a counter that only grows; name it *_total) with
        `labels`, whose values `read` gives when scraped."""
        self._reads.sources[name] = (kind, doc, labels, read)

    # ---- bus subscribers ---------------------------------------------------------------------
    def on_job_changed(self, event: JobChanged) -> None:
        job = event.job
        state = job.state
        since: float | None = None
        if event.previous is None and not event.remote:
            self.submitted.inc()
        if state is JobState.QUEUED:
            if not event.remote:
                entered = job.created_at if event.previous is None else self._clock()
                self._queued_since[job.id] = max(entered, job.not_before or 0.0)
        else:
            since = self._queued_since.pop(job.id, None)
        if state.terminal:
            self._assigned_at.pop(job.id, None)
            if not event.remote:
                self.finished.labels(state.value).inc()
        attempt = event.attempt
        if attempt is None:
            return
        if attempt.state is AttemptState.ASSIGNED:
            self.dispatched.inc()
            now = attempt.assigned_at or self._clock()
            self._assigned_at[job.id] = now
            if since is None and job.attempts == 1:
                since = job.created_at  # queued before this server started
            if since is not None:
                self.queue_wait.observe(max(0.0, now - since))
        elif attempt.state is AttemptState.RUNNING:
            assigned = self._assigned_at.pop(job.id, None)
            if assigned is not None and attempt.started_at is not None:
                self.start_latency.observe(max(0.0, attempt.started_at - assigned))
        else:
            self._assigned_at.pop(job.id, None)
            if attempt.started_at is not None and attempt.finished_at is not None:
                self._run_time[attempt.state].observe(
                    max(0.0, attempt.finished_at - attempt.started_at)
                )
            if attempt.cpu_seconds is not None and attempt.peak_memory_bytes is not None:
                self._cpu[attempt.state].observe(attempt.cpu_seconds)
                self._memory[attempt.state].observe(attempt.peak_memory_bytes)
            if attempt.read_bytes is not None and attempt.written_bytes is not None:
                self._read.inc(attempt.read_bytes)
                self._written.inc(attempt.written_bytes)
            key = (attempt.state, attempt.failure)
            child = self._attempts.get(key)
            if child is None:
                failure = attempt.failure.value if attempt.failure is not None else ""
                child = self._attempts[key] = self.attempts.labels(attempt.state.value, failure)
            child.inc()

    def on_provisioned(self, event: WorkerProvisioned) -> None:
        self.provisioning.labels(provider_label(event.provider)).observe(event.seconds)

    def on_provisioning_failed(self, event: ProvisioningFailed) -> None:
        self.provisioning_failures.labels(provider_label(event.provider), event.reason).inc()

    def on_run_changed(self, event: RunChanged) -> None:
        if not event.steps and event.run.state.terminal:  # a run's conclusion
            self.pipeline_runs.labels(event.run.state.value).inc()

    def commit_observed(self, seconds: float) -> None:
        """The store's commit timer (called from its writer thread on SQLite: thread-safe)."""
        self.store_commit.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
