"""In-memory event bus: synchronous fan-out of job events to subscribers in the same loop."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from hodei.domain.jobs import Job, JobState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JobChanged:
    job: Job
    previous: JobState | None  # None when the job was just created, or unknown (remote)
    remote: bool = False  # another server sharing the store made the change


Handler = Callable[[JobChanged], None]


class EventBus:
    """Handlers run synchronously in publish order and must not block; a failing handler is
    logged and never stops the others."""

    def __init__(self) -> None:
        self._handlers: list[Handler] = []

    def subscribe(self, handler: Handler) -> Callable[[], None]:
        self._handlers.append(handler)
        return lambda: self._handlers.remove(handler)

    def publish(self, event: JobChanged) -> None:
        for handler in list(self._handlers):
            try:
                handler(event)
            except Exception:
                log.exception("event handler %r failed", handler)
