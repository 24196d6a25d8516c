"""Log hub: appends agents' log chunks durably, dedups resends by sequence, and fans the bytes
out to any number of live followers from an in-memory tail."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from hodei.domain.jobs import Job, attempt_over
from hodei.ports import LogStore
from hodei.server.core.bus import EventBus, LogGrew

log = logging.getLogger(__name__)

TAIL_BYTES = 1 << 20  # recent bytes kept in memory per live attempt
READ_CHUNK = 64 * 1024


@dataclass(slots=True)
class LiveLog:
    size: int
    agent_end: int = 0  # end offset, in the agent's numbering, of the bytes stored
    last_seq: int = 0
    tail: bytearray = field(default_factory=bytearray)
    tail_start: int = 0  # offset of tail[0]
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    followers: int = 0
    over: bool = False  # the attempt can produce no more bytes
    local: bool = False  # appended to here: `tail` holds its newest bytes (else read the store)

    def wake(self) -> None:
        # Replace the event so every current waiter wakes and later waits block again.
        event, self.changed = self.changed, asyncio.Event()
        event.set()


class LogHub:
    def __init__(self, store: LogStore, bus: EventBus | None = None) -> None:
        self._store = store
        self._bus = bus  # told of every append (LogGrew): the cluster tells other servers
        self._live: dict[tuple[str, int], LiveLog] = {}
        # job id -> its attempts in _live: job_changed runs on every job event and must not
        # walk every live log.
        self._attempts: dict[str, set[int]] = {}
        # Read by the metrics when scraped: bytes stored from agents, bytes served to
        # readers and followers, followers attached now.
        self.bytes_in = 0
        self.bytes_out = 0
        self.followers = 0

    def _put(self, job_id: str, attempt: int, live: LiveLog) -> None:
        self._live[(job_id, attempt)] = live
        self._attempts.setdefault(job_id, set()).add(attempt)

    def _drop(self, job_id: str, attempt: int) -> LiveLog | None:
        live = self._live.pop((job_id, attempt), None)
        attempts = self._attempts.get(job_id)
        if attempts is not None:
            attempts.discard(attempt)
            if not attempts:
                del self._attempts[job_id]
        return live

    def _get(self, job_id: str, attempt: int) -> LiveLog:
        key = (job_id, attempt)
        live = self._live.get(key)
        if live is None:
            size = self._store.size(job_id, attempt)
            live = LiveLog(size=size, agent_end=size, tail_start=size)
            self._put(job_id, attempt, live)
        return live

    def append(self, job_id: str, attempt: int, seq: int, offset: int, data: bytes) -> bool:
        """Store one chunk that starts at `offset` of the attempt's output. What is already
        stored (a resend after a reconnect or a server restart) is skipped by offset, so the
        log has no duplicate; returns whether any byte was new."""
        live = self._get(job_id, attempt)
        end = offset + len(data)
        if end <= live.agent_end:
            live.last_seq = max(live.last_seq, seq)
            return False
        if offset < live.agent_end:
            data = data[live.agent_end - offset :]
        elif offset > live.agent_end:
            log.warning(
                "log of %s attempt %d: %d byte(s) never arrived (the agent dropped them)",
                job_id,
                attempt,
                offset - live.agent_end,
            )
        live.size = self._store.append(job_id, attempt, data)
        self.bytes_in += len(data)
        # Only once stored: last_seq is what the agent is told it may forget (a chunk the
        # store refused must not count, or a resend of an earlier one would ack it too).
        live.last_seq = max(live.last_seq, seq)
        live.local = True
        live.agent_end = end
        live.tail += data
        excess = len(live.tail) - TAIL_BYTES
        if excess > 0:
            del live.tail[:excess]
            live.tail_start += excess
        live.wake()
        if self._bus is not None and self._bus.listened(LogGrew):
            self._bus.publish(LogGrew(job_id, attempt, live.size))
        return True

    def remote_appended(self, job_id: str, attempt: int, size: int) -> None:
        """Another server appended to this log (on the shared log directory): wake followers
        here, who then read the new bytes from the store."""
        live = self._live.get((job_id, attempt))
        if live is None:
            return  # nobody follows it here
        live.size = max(live.size, size)
        live.wake()

    def last_seq(self, job_id: str, attempt: int) -> int:
        live = self._live.get((job_id, attempt))
        return live.last_seq if live else 0

    def seal(self, job_id: str, attempt: int) -> None:
        """The attempt ended: flush it, wake followers, drop the tail unless someone follows."""
        self._store.seal(job_id, attempt)
        live = self._drop(job_id, attempt)
        if live is not None:
            live.over = True
            live.wake()
            if live.followers:
                self._put(job_id, attempt, live)

    def read(self, job_id: str, attempt: int, offset: int = 0, limit: int = -1) -> bytes:
        live = self._live.get((job_id, attempt))
        if live is not None and live.local and offset >= live.tail_start:
            start = offset - live.tail_start
            end = len(live.tail) if limit < 0 else start + limit
            return bytes(live.tail[start:end])
        return self._store.read(job_id, attempt, offset, limit)

    def size(self, job_id: str, attempt: int) -> int:
        live = self._live.get((job_id, attempt))
        return live.size if live is not None else self._store.size(job_id, attempt)

    @property
    def store(self) -> LogStore:
        return self._store

    async def size_now(self, job_id: str, attempt: int) -> int:
        """size(), with the store's answer (a stat of the file) from a worker thread."""
        live = self._live.get((job_id, attempt))
        if live is not None:
            return live.size
        return await asyncio.to_thread(self._store.size, job_id, attempt)

    async def read_span(self, job_id: str, attempt: int, offset: int, limit: int) -> bytes:
        """Up to `limit` bytes from `offset`: from the in-memory tail when it holds them, else
        read from the store in a worker thread (a request must not stall the loop on disk)."""
        live = self._live.get((job_id, attempt))
        if live is not None and live.local and offset >= live.tail_start:
            start = offset - live.tail_start
            data = bytes(live.tail[start : start + max(0, limit)])
        else:
            data = await asyncio.to_thread(self._store.read, job_id, attempt, offset, limit)
        self.bytes_out += len(data)
        return data

    def job_changed(self, job: Job) -> None:
        """Mark attempts of `job` that can produce no more bytes, and wake their followers."""
        for attempt in list(self._attempts.get(job.id, ())):
            live = self._live[(job.id, attempt)]
            if not live.over and attempt_over(job, attempt):
                live.over = True
                live.wake()

    def open(self, job_id: str, attempt: int) -> LiveLog:
        """Register a follower before reading the job's state, so no end event is missed."""
        live = self._get(job_id, attempt)
        live.followers += 1
        self.followers += 1
        return live

    async def follow(
        self, job_id: str, attempt: int, live: LiveLog, offset: int, wait: bool
    ) -> AsyncIterator[tuple[int, bytes]]:
        """Yield (end_offset, bytes) from `offset` on. With `wait`, keep waiting for new bytes
        until the attempt is over and everything has been read. `live` comes from open()."""
        try:
            while True:
                changed = live.changed
                data = self.read(job_id, attempt, offset, READ_CHUNK)
                if data:
                    offset += len(data)
                    self.bytes_out += len(data)
                    yield offset, data
                    continue
                if not wait or live.over:
                    return
                await changed.wait()
        finally:
            live.followers -= 1
            self.followers -= 1
            if live.followers == 0 and live.over:
                self._drop(job_id, attempt)

    def close(self) -> None:
        self._store.close()
