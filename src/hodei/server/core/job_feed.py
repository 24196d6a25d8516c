"""A live feed of job changes for one client (`GET /api/v1/jobs/events`), bounded.

The feed hears every JobChanged on the bus (this server's and, relayed, the other servers'),
keeps those of jobs its filter concerns, and hands them out in batches: the latest state of
each job changed since the last batch, first changed first. A job that changes twice before
the client takes it is sent once, as it is then: a list shows states, not their history.
When more jobs are pending than `limit` (the client reads slower than jobs change), the feed
drops them all and says RESYNC once: the client reads the list again, and the feed goes on
from there. Memory per client is so bounded whatever the rate of changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from enum import Enum
from types import TracebackType

from hodei.domain.job_filter import JobFilter
from hodei.domain.jobs import Job
from hodei.server.core.bus import EventBus, JobChanged

MAX_PENDING = 10_000  # jobs: above a batch submit (1,000) several times over


class Resync(Enum):
    RESYNC = "resync"


RESYNC = Resync.RESYNC


def concerns(wanted: JobFilter, event: JobChanged) -> bool:
    """Whether a client following `wanted` must hear of this change: the job matches, or
    it matched before (its state is the only part of a job that changes) and the client must
    drop it. A change relayed from another server does not say the state before: those of
    jobs the rest of the filter matches are sent, and the client keeps what matches."""
    if wanted.matches(event.job):
        return True
    if wanted.state is None or event.job.state is wanted.state:
        return False  # it fails a part that never changes
    if event.previous is not wanted.state and not (event.previous is None and event.remote):
        return False
    return JobFilter(None, wanted.name, wanted.labels, wanted.pipeline).matches(event.job)


class JobFeed:
    """Use as a context manager: subscribed inside, unsubscribed on leaving (also when the
    client's stream is cancelled)."""

    def __init__(self, bus: EventBus, wanted: JobFilter, limit: int = MAX_PENDING) -> None:
        self._bus = bus
        self.wanted = wanted
        self._limit = max(1, limit)
        self._pending: dict[str, Job] = {}  # by job id; dicts keep first-changed order
        self._behind = False
        self._wake = asyncio.Event()
        self._unsubscribe: Callable[[], None] | None = None
        self.resyncs = 0

    def __enter__(self) -> JobFeed:
        self._unsubscribe = self._bus.subscribe(JobChanged, self._heard)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _heard(self, event: JobChanged) -> None:
        # Runs inside the publisher's call: only cheap tests and a dict write here.
        if self._behind or not concerns(self.wanted, event):
            return
        job = event.job
        if job.id not in self._pending and len(self._pending) >= self._limit:
            self._behind = True  # fell behind: what is pending no longer matters
            self._pending.clear()
            self.resyncs += 1
        else:
            self._pending[job.id] = job
        self._wake.set()

    async def next(self, quiet_s: float) -> list[Job] | Resync | None:
        """The jobs changed since the last call, RESYNC once after falling behind, or None
        when nothing changed for `quiet_s` seconds (the stream's keep-alive is due)."""
        if not self._pending and not self._behind:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), quiet_s)
            except TimeoutError:
                return None
        if self._behind:
            self._behind = False
            return RESYNC
        batch = list(self._pending.values())
        self._pending.clear()
        return batch
