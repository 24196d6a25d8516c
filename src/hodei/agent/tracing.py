"""The agent's spans: one `run` span per attempt, a child of the attempt span whose context
the assignment carries (`traceparent`), so it joins the server's trace. On when the agent's
environment names an OTLP endpoint (HODEI_OTLP_ENDPOINT, which the server gives the workers
it starts, or OTEL_EXPORTER_OTLP_ENDPOINT); the spans then go there in batches."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Protocol

from hodei.domain.work import Assignment

log = logging.getLogger(__name__)

EndRun = Callable[[int, str], None]  # (exit code, error): ends the run span


class RunTracing(Protocol):
    def start(self, assign: Assignment) -> tuple[Assignment, EndRun]:
        """The assignment to run (its `traceparent` now the run span's, for the job's
        TRACEPARENT) and what ends the span."""
        ...

    def close(self) -> None: ...


def _ignore(exit_code: int, error: str) -> None:
    return None


class NoRunTracing:
    def start(self, assign: Assignment) -> tuple[Assignment, EndRun]:
        return assign, _ignore  # a traceparent from the server still reaches the job

    def close(self) -> None:
        return None


class OtelRunTracing:
    def __init__(self, endpoint: str, worker: str = "") -> None:
        from hodei.telemetry import make_tracer

        self._tracer, self._shutdown = make_tracer("hodei-agent", endpoint, worker)

    def start(self, assign: Assignment) -> tuple[Assignment, EndRun]:
        from opentelemetry.trace import Status, StatusCode

        from hodei.telemetry import context_of, traceparent_of

        attributes: dict[str, str | int] = {
            "hodei.job.id": assign.job_id,
            "hodei.attempt": assign.attempt,
        }
        span = self._tracer.start_span("run", context_of(assign.traceparent), attributes=attributes)

        def end(exit_code: int, error: str) -> None:
            span.set_attribute("hodei.exit_code", exit_code)
            if exit_code != 0 or error:
                span.set_status(Status(StatusCode.ERROR, error or f"exit code {exit_code}"))
            span.end()

        return replace(assign, traceparent=traceparent_of(span)), end

    def close(self) -> None:
        self._shutdown()


def run_tracing(env: Mapping[str, str]) -> RunTracing:
    """Spans exported to the endpoint `env` names; none without one."""
    endpoint = env.get("HODEI_OTLP_ENDPOINT", "").strip()
    endpoint = endpoint or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if not endpoint:
        return NoRunTracing()
    try:
        return OtelRunTracing(endpoint)
    except ImportError as exc:  # an agent bundle built without the SDK
        log.warning("traces are off: OpenTelemetry is not available here (%s)", exc)
        return NoRunTracing()
