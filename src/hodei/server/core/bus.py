"""In-memory event bus: synchronous fan-out of events to subscribers in the same loop.

Where several parties must hear of something (a job changed, a log grew, a worker connected or
exited), the one who knows publishes an event here and whoever cares subscribes to its type;
nobody sets a callback on somebody else's object.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from hodei.domain.attempts import Attempt
from hodei.domain.jobs import Job, JobState
from hodei.domain.pipelines.runs import PipelineRun, RunStep

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JobChanged:
    job: Job
    previous: JobState | None  # None when the job was just created, or unknown (remote)
    remote: bool = False  # another server sharing the store made the change
    attempt: Attempt | None = None  # the attempt record this change wrote (local changes)


@dataclass(frozen=True, slots=True)
class LogGrew:
    """Bytes were appended here to an attempt's log (servers sharing the log directory hear)."""

    job_id: str
    attempt: int
    size: int


@dataclass(frozen=True, slots=True)
class WorkerConnected:
    worker_id: str


@dataclass(frozen=True, slots=True)
class WorkerExited:
    """A provider saw one of its workers' processes end."""

    worker_id: str
    code: int
    why: str = ""  # what the provider knows of why (a pod OOMKilled, evicted, deleted...)


@dataclass(frozen=True, slots=True)
class WorkerProvisioned:
    """A worker the provisioner launched registered, `seconds` after its launch began."""

    provider: str
    seconds: float


@dataclass(frozen=True, slots=True)
class ProvisioningFailed:
    """A launch came to nothing; `reason` is one of provisioning.FAILURE_REASONS."""

    provider: str
    reason: str


@dataclass(frozen=True, slots=True)
class ImageUnavailable:
    """The provider cannot get `image` (not on the engine, and pulling it failed): the jobs
    waiting for it fail with `reason` instead of waiting for a worker that will never come."""

    image: str
    reason: str


@dataclass(frozen=True, slots=True)
class CancelElsewhere:
    """A job was cancelled whose worker is not connected to this server (maybe to another)."""

    job_id: str


@dataclass(frozen=True, slots=True)
class RunChanged:
    """A pipeline run advanced: its state as stored now, and the step rows this pass wrote."""

    run: PipelineRun
    steps: tuple[RunStep, ...]


E = TypeVar("E")


class EventBus:
    """Handlers run synchronously in subscription order and must not block; a failing handler
    is logged and never stops the others."""

    def __init__(self) -> None:
        self._handlers: dict[type, list[Callable[[Any], None]]] = {}

    def subscribe(self, kind: type[E], handler: Callable[[E], None]) -> Callable[[], None]:
        handlers = self._handlers.setdefault(kind, [])
        handlers.append(handler)
        return lambda: handlers.remove(handler)

    def listened(self, kind: type) -> bool:
        """Whether anyone subscribes to `kind` (spares building events nobody hears)."""
        return bool(self._handlers.get(kind))

    def publish(self, event: object) -> None:
        handlers = self._handlers.get(type(event))
        if not handlers:
            return
        for handler in tuple(handlers):
            try:
                handler(event)
            except Exception:
                log.exception("event handler %r failed", handler)
