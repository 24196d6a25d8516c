"""Prometheus metrics, in a registry of this server's own (no global state)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hodei.server.core.bus import JobChanged


class _Gauges(Collector):
    def __init__(self, sources: dict[str, tuple[str, Callable[[], float]]]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, (doc, read) in self._sources.items():
            yield GaugeMetricFamily(name, doc, value=read())


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.submitted = Counter("hodei_jobs_submitted", "Jobs accepted", registry=self.registry)
        self.finished = Counter(
            "hodei_jobs_finished",
            "Jobs that reached an end state",
            ["state"],
            registry=self.registry,
        )
        self.dispatched = Counter(
            "hodei_jobs_dispatched", "Attempts sent to workers", registry=self.registry
        )
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.registry.register(_Gauges(self._gauges))

    def gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        self._gauges[name] = (doc, read)

    def on_job_changed(self, event: JobChanged) -> None:
        job = event.job
        if event.previous is None:
            self.submitted.inc()
        elif job.state.terminal:
            self.finished.labels(job.state.value).inc()
        elif job.state.value == "assigned":
            self.dispatched.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
