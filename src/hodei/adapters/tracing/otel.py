"""The Tracing port on OpenTelemetry: spans exported over OTLP gRPC in batches.

A job's spans are kept here, in memory, while it lives (bounded: past MAX_TRACED jobs at
once, new ones are not traced); a server restart ends the trace of the jobs it finds (their
later attempts are not traced). Times are honest: the queue wait runs from the moment the job
was queued to the one it was placed, each span created with explicit start and end times."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode, Tracer, set_span_in_context

from hodei.domain.jobs import Job, JobState
from hodei.domain.pipelines.runs import PipelineRun
from hodei.server.core.bus import JobChanged
from hodei.telemetry import context_of, traceparent_of

MAX_TRACED = 100_000  # jobs and runs followed at once (each holds a few open spans)


@dataclass(slots=True)
class _JobTrace:
    span: Span
    context: Context
    queued_ns: int
    attempt: Span | None = None  # the open attempt's span
    attempt_context: Context | None = None
    dispatch: Span | None = None


class OtelTracing:
    def __init__(self, tracer: Tracer, shutdown: Callable[[], None]) -> None:
        self._tracer = tracer
        self._shutdown = shutdown
        self._jobs: dict[str, _JobTrace] = {}
        self._provisions: dict[str, Span] = {}
        self._runs: dict[str, tuple[Span, Context]] = {}

    @property
    def on(self) -> bool:
        return True

    # ---- a job ------------------------------------------------------------------------------
    def submitted(self, job: Job, traceparent: str | None, started_ns: int) -> None:
        if len(self._jobs) >= MAX_TRACED:
            return
        now = time.time_ns()
        attributes = {"hodei.job.id": job.id, "hodei.job.name": job.spec.name}
        span = self._tracer.start_span(
            "job", context_of(traceparent), attributes=attributes, start_time=started_ns
        )
        context = set_span_in_context(span)
        self._tracer.start_span("submit", context, start_time=started_ns).end(now)
        self._jobs[job.id] = _JobTrace(span, context, now)

    def _attempt(self, trace: _JobTrace, number: int) -> Context:
        if trace.attempt is None or trace.attempt_context is None:
            trace.attempt = self._tracer.start_span(
                "attempt",
                trace.context,
                attributes={"hodei.attempt": number},
                start_time=trace.queued_ns,
            )
            trace.attempt_context = set_span_in_context(trace.attempt)
        return trace.attempt_context

    def provisioning(self, job: Job, worker_id: str, provider: str) -> None:
        trace = self._jobs.get(job.id)
        if trace is None or len(self._provisions) >= MAX_TRACED:
            return
        context = self._attempt(trace, job.attempts + 1)
        attributes = {"hodei.worker.id": worker_id, "hodei.provider": provider}
        self._provisions[worker_id] = self._tracer.start_span(
            "provision", context, attributes=attributes
        )

    def provisioned(self, worker_id: str, error: str = "") -> None:
        span = self._provisions.pop(worker_id, None)
        if span is not None:
            if error:
                span.set_status(Status(StatusCode.ERROR, error))
            span.end()

    def placed(self, job: Job, worker_id: str, started_ns: int) -> None:
        trace = self._jobs.get(job.id)
        if trace is None:
            return
        now = time.time_ns()
        context = self._attempt(trace, job.attempts + 1)
        self._tracer.start_span("queue wait", context, start_time=trace.queued_ns).end(now)
        attributes = {"hodei.worker.id": worker_id}
        span = self._tracer.start_span(
            "schedule", context, attributes=attributes, start_time=started_ns
        )
        span.end(now)

    def dispatching(self, job: Job, worker_id: str) -> str:
        trace = self._jobs.get(job.id)
        if trace is None:
            return ""
        context = self._attempt(trace, job.attempts + 1)
        assert trace.attempt is not None
        trace.attempt.set_attribute("hodei.worker.id", worker_id)
        trace.dispatch = self._tracer.start_span("dispatch", context)
        return traceparent_of(trace.attempt)

    def dispatched(self, job_id: str, error: str = "") -> None:
        trace = self._jobs.get(job_id)
        if trace is None or trace.dispatch is None:
            return
        if error:
            trace.dispatch.set_status(Status(StatusCode.ERROR, error))
        trace.dispatch.end()
        trace.dispatch = None

    def result(self, job_id: str, attempt: int) -> Callable[[str], None]:
        trace = self._jobs.get(job_id)
        context = trace.attempt_context if trace is not None else None
        if context is None:
            return _ignore
        span = self._tracer.start_span("result", context, attributes={"hodei.attempt": attempt})

        def applied(outcome: str) -> None:
            span.set_attribute("hodei.outcome", outcome)
            span.end()

        return applied

    def on_job_changed(self, event: JobChanged) -> None:
        if event.remote:
            return
        job = event.job
        trace = self._jobs.get(job.id)
        if trace is None or job.state in (JobState.ASSIGNED, JobState.RUNNING):
            return
        if event.previous in (JobState.ASSIGNED, JobState.RUNNING) or job.state.terminal:
            self._end_attempt(trace, job)
        if job.state is JobState.QUEUED:
            trace.queued_ns = time.time_ns()  # the next attempt's wait starts now
        elif job.state.terminal:
            del self._jobs[job.id]
            trace.span.set_attribute("hodei.state", job.state.value)
            trace.span.set_attribute("hodei.attempts", job.attempts)
            if job.state is not JobState.SUCCEEDED:
                trace.span.set_status(Status(StatusCode.ERROR, job.reason or job.state.value))
            trace.span.end()

    def _end_attempt(self, trace: _JobTrace, job: Job) -> None:
        self.dispatched(job.id, "ended before its dispatch was recorded")
        span = trace.attempt
        if span is None:
            return
        # The outcome of the attempt: the record this change wrote says it.
        outcome = job.state.value
        span.set_attribute("hodei.outcome", outcome)
        if job.state is not JobState.SUCCEEDED:
            span.set_status(Status(StatusCode.ERROR, job.reason or outcome))
        span.end()
        trace.attempt = None  # its context stays for the result span that follows

    # ---- a pipeline run ---------------------------------------------------------------------
    def run_context(self, run: PipelineRun) -> str | None:
        known = self._runs.get(run.id)
        if known is None:
            if len(self._runs) >= MAX_TRACED:
                return None
            attributes = {"hodei.run.id": run.id, "hodei.pipeline": run.name}
            start = int(run.created_at * 1e9) if run.created_at else None
            span = self._tracer.start_span("pipeline run", attributes=attributes, start_time=start)
            known = self._runs[run.id] = (span, set_span_in_context(span))
        return traceparent_of(known[0])

    def run_ended(self, run: PipelineRun) -> None:
        known = self._runs.pop(run.id, None)
        if known is not None:
            span = known[0]
            span.set_attribute("hodei.state", run.state.value)
            if run.state.value != "succeeded":
                span.set_status(Status(StatusCode.ERROR, run.reason or run.state.value))
            span.end()

    def close(self) -> None:
        for trace in self._jobs.values():  # still going: what is known of them is sent
            trace.span.end()
        for span, _ in self._runs.values():
            span.end()
        self._jobs.clear()
        self._runs.clear()
        self._shutdown()


def _ignore(outcome: str) -> None:
    return None
