"""Tracing: what the core tells a trace about a job's way through it. One trace per job (the
caller's when its submit carried a W3C `traceparent`), with a span per attempt whose
children are its queue wait, the provisioning of a worker started for it, the scheduling
decision, the dispatch, the agent's run (joined through the assignment's `traceparent`) and
the result; a pipeline run is one trace with its steps' jobs as children.

`Tracing` is the port; `NoTracing`, with tracing off, does nothing and creates no object,
so the hot path pays one method call per hook. The OpenTelemetry implementation is an
adapter (`adapters/tracing/otel.py`), built by the composition root only when an OTLP
endpoint is set."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from hodei.domain.jobs import Job
from hodei.domain.pipelines.runs import PipelineRun
from hodei.server.core.bus import JobChanged


class Tracing(Protocol):
    @property
    def on(self) -> bool:
        """Whether spans are recorded (callers skip measuring times when not)."""
        ...

    def submitted(self, job: Job, traceparent: str | None, started_ns: int) -> None:
        """`job` was stored (its submit began at `started_ns`): its trace starts, under
        `traceparent` when given."""
        ...

    def provisioning(self, job: Job, worker_id: str, provider: str) -> None:
        """A worker is being started for `job`'s next attempt."""
        ...

    def provisioned(self, worker_id: str, error: str = "") -> None:
        """That worker registered (or, with `error`, never will)."""
        ...

    def placed(self, job: Job, worker_id: str, started_ns: int) -> None:
        """The scheduler chose `worker_id` for `job` (deciding began at `started_ns`)."""
        ...

    def dispatching(self, job: Job, worker_id: str) -> str:
        """The attempt is being handed to its worker: the `traceparent` its assignment
        carries ("" when not traced)."""
        ...

    def dispatched(self, job_id: str, error: str = "") -> None:
        """Its `assigned` write committed (or, with `error`, failed)."""
        ...

    def result(self, job_id: str, attempt: int) -> Callable[[str], None]:
        """The attempt's result came and is being applied: what to call with the outcome
        once it is."""
        ...

    def on_job_changed(self, event: JobChanged) -> None:
        """An attempt or the job ended (subscribed to the bus only when tracing is on)."""
        ...

    def run_context(self, run: PipelineRun) -> str | None:
        """The `traceparent` a step's job of `run` is submitted under."""
        ...

    def run_ended(self, run: PipelineRun) -> None: ...

    def close(self) -> None:
        """Send the spans not sent yet and stop."""
        ...


class NoTracing:
    """Tracing off: every hook returns at once."""

    @property
    def on(self) -> bool:
        return False

    def submitted(self, job: Job, traceparent: str | None, started_ns: int) -> None:
        return None

    def provisioning(self, job: Job, worker_id: str, provider: str) -> None:
        return None

    def provisioned(self, worker_id: str, error: str = "") -> None:
        return None

    def placed(self, job: Job, worker_id: str, started_ns: int) -> None:
        return None

    def dispatching(self, job: Job, worker_id: str) -> str:
        return ""

    def dispatched(self, job_id: str, error: str = "") -> None:
        return None

    def result(self, job_id: str, attempt: int) -> Callable[[str], None]:
        return _ignore

    def on_job_changed(self, event: JobChanged) -> None:
        return None

    def run_context(self, run: PipelineRun) -> str | None:
        return None

    def run_ended(self, run: PipelineRun) -> None:
        return None

    def close(self) -> None:
        return None


def _ignore(outcome: str) -> None:
    return None


NO_TRACING = NoTracing()
