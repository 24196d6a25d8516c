"""Adaptive batching of everything the agent sends, and the record of what is not yet acked.

A sender loop `while True: await call.write(await outbox.next_message())` sends at once when
the stream is idle and batches while a write is in flight: whatever piles up meanwhile goes out
in the next single AgentMessage. Logs are coalesced per job attempt into LogChunks of at most
`chunk_size` bytes, numbered 1, 2, 3... per attempt; a job's result is sent only once all its
logs are out (and in the same message, logs come before results, as HWP orders them), with
`last_sequence` filled in here.

Sent chunks and results stay until acked (LogAck, ResultAck), so a reconnect can resend them
with `rewind()`. Nothing is ever dropped here: memory is bounded per attempt by backpressure.
Once an attempt holds `max_job_bytes` (default 64 MiB, `HODEI_AGENT_MAX_UNACKED`) of output not
yet acked (sent or not), `add_log` still keeps what it is given but returns a future, done once
acks have brought the attempt under the bound again: the runner stops reading the job's output
until then, so the job blocks on its writes instead of the agent growing. A job's own output
limit (`--max-output`, hodei.domain.job_output) is applied before the outbox.

An attempt's artifact archive (a file in the agent's spool) leaves before its result, in
ArtifactChunks read from the file only as messages are made: the sender writes one message at
a time, so the stream's own flow control bounds the memory, whatever the archive's size. It
is kept until the result is acked, and sent again whole after a reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias

from hodei._proto.hodei.v1 import worker_pb2
from hodei.agent.artifacts import Archive
from hodei.domain.jobs import parse_size
from hodei.errors import ValidationError

CHUNK_SIZE = 4 * 1024
MAX_MESSAGE_LOG_BYTES = 1024 * 1024  # per message, well under the 16 MiB gRPC limit
MAX_JOB_BYTES = 64 * 1024 * 1024  # output not yet acked per attempt, before the job is paused
MAX_UNACKED_ENV = "HODEI_AGENT_MAX_UNACKED"
ARTIFACT_CHUNK = 256 * 1024
MAX_MESSAGE_ARTIFACT_BYTES = 1024 * 1024  # per message, beside the logs' budget
MAX_MESSAGE_OUTPUTS_BYTES = 4 * 1024 * 1024  # results' outputs per message (one always goes)

log = logging.getLogger("hodei.agent")

Key = tuple[str, int]
Phase: TypeAlias = worker_pb2.JobStatusUpdate.Phase


@dataclass(slots=True)
class _Attempt:
    """Log state of one job attempt."""

    pending: bytearray = field(default_factory=bytearray)  # not yet cut into chunks
    pending_ts: int = 0  # when the oldest pending byte arrived
    resend: deque[worker_pb2.LogChunk] = field(default_factory=deque)  # rewound, to send again
    unacked: deque[worker_pb2.LogChunk] = field(default_factory=deque)  # sent, not acked
    unacked_bytes: int = 0  # in unacked and resend
    room: asyncio.Future[None] | None = None  # while at the bound: done once under it again
    seq: int = 0  # last sequence handed out
    offset: int = 0  # output bytes cut into chunks so far (the next chunk's offset)

    def has_logs(self) -> bool:
        return bool(self.pending or self.resend)

    def buffered(self) -> int:
        """Output bytes held and not acked: sent, to send again, or not sent yet."""
        return self.unacked_bytes + len(self.pending)

    def open(self) -> None:
        """Let the producer go on (under the bound again, or the attempt is settled)."""
        if self.room is not None:
            if not self.room.done():
                self.room.set_result(None)
            self.room = None


@dataclass(slots=True)
class _Upload:
    """An attempt's archive on its way: the offset of its next chunk."""

    archive: Archive
    offset: int = 0
    done: bool = False  # its last chunk is out (since the last rewind)


def max_unacked_from_env() -> int:
    """The per-attempt bound from HODEI_AGENT_MAX_UNACKED ('1M', '64Mi', bytes), or 64 MiB."""
    text = os.environ.get(MAX_UNACKED_ENV, "").strip()
    if not text:
        return MAX_JOB_BYTES
    try:
        size = parse_size(text)
    except ValidationError as exc:
        log.warning("%s: %s; using %d bytes", MAX_UNACKED_ENV, exc.message, MAX_JOB_BYTES)
        return MAX_JOB_BYTES
    return max(1, size)


class Outbox:
    """See the module docstring. Single consumer: one task calls next_message()."""

    def __init__(
        self,
        *,
        chunk_size: int = CHUNK_SIZE,
        max_message_bytes: int = MAX_MESSAGE_LOG_BYTES,
        max_job_bytes: int | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._chunk_size = chunk_size
        self._max_message = max_message_bytes
        self._max_job = max(1, max_job_bytes) if max_job_bytes else max_unacked_from_env()
        self._clock = clock
        self._jobs: dict[Key, _Attempt] = {}
        self._ready: dict[Key, None] = {}  # attempts with logs to send, oldest first (ordered)
        self._updates: list[worker_pb2.JobStatusUpdate] = []
        self._results: dict[Key, worker_pb2.JobResult] = {}  # to send
        self._sent_results: dict[Key, worker_pb2.JobResult] = {}  # sent, not acked
        self._heartbeat: worker_pb2.Heartbeat | None = None
        self._uploads: dict[Key, _Upload] = {}  # until the attempt's result is acked
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()

    # ---- producers -----------------------------------------------------------------------

    @property
    def max_job_bytes(self) -> int:
        return self._max_job

    def add_log(self, job_id: str, attempt: int, data: bytes) -> asyncio.Future[None] | None:
        """Keep `data` to send. None: give more at will; a future: the attempt is at its bound,
        give no more until the future is done (what is given meanwhile is kept all the same)."""
        key = (job_id, attempt)
        job = self._jobs.get(key)
        if data:
            job = self._jobs.setdefault(key, _Attempt())
            if not job.pending:
                job.pending_ts = self._clock()
            job.pending += data
            self._ready[key] = None
            self._wake.set()
        if job is None or job.buffered() < self._max_job:
            return None
        if job.room is None:
            job.room = asyncio.get_running_loop().create_future()
        return job.room

    def buffered(self, job_id: str, attempt: int) -> int:
        """This attempt's output bytes held and not acked yet."""
        job = self._jobs.get((job_id, attempt))
        return 0 if job is None else job.buffered()

    def add_update(self, job_id: str, attempt: int, phase: Phase, pid: int = 0) -> None:
        self._updates.append(
            worker_pb2.JobStatusUpdate(
                job_id=job_id, attempt=attempt, phase=phase, pid=pid, timestamp_ns=self._clock()
            )
        )
        self._wake.set()

    def add_result(self, result: worker_pb2.JobResult, archive: Archive | None = None) -> None:
        """Queue a job's final result; it leaves after all of that attempt's logs and, with
        `archive`, after all of its chunks (the outbox discards it once the result is acked)."""
        stored = worker_pb2.JobResult()
        stored.CopyFrom(result)
        if not stored.timestamp_ns:
            stored.timestamp_ns = self._clock()
        key = (stored.job_id, stored.attempt)
        self._results[key] = stored
        if archive is not None:
            self._discard_upload(key)
            self._uploads[key] = _Upload(archive)
        self._wake.set()

    def set_heartbeat(self, usage: worker_pb2.ResourceUsage) -> None:
        """Only the latest heartbeat matters: a newer one replaces one not yet sent."""
        self._heartbeat = worker_pb2.Heartbeat(usage=usage, timestamp_ns=self._clock())
        self._wake.set()

    # ---- consumer ------------------------------------------------------------------------

    def has_pending(self) -> bool:
        return bool(
            self._heartbeat
            or self._updates
            or self._results
            or self._ready
            or any(not u.done for u in self._uploads.values())
        )

    async def next_message(self) -> worker_pb2.AgentMessage:
        """Wait until something is pending, then return one message carrying all of it."""
        while not self.has_pending():
            self._wake.clear()
            await self._wake.wait()
        return self.take()

    def take(self) -> worker_pb2.AgentMessage:
        """Everything pending now (logs up to the per-message budget), as one message."""
        msg = worker_pb2.AgentMessage()
        if self._heartbeat is not None:
            msg.heartbeat.CopyFrom(self._heartbeat)
            self._heartbeat = None
        budget = self._max_message
        for key in list(self._ready):
            if budget <= 0:
                break
            job = self._jobs[key]
            budget -= self._take_logs(key, job, msg, budget)
            del self._ready[key]
            if job.has_logs():  # over budget: to the back, so other jobs are not starved
                self._ready[key] = None
        if self._uploads:
            self._take_artifacts(msg)
        msg.updates.extend(self._updates)
        self._updates.clear()
        outputs = 0  # results carry outputs files (up to 1 MiB each): the message stays small
        for key in [k for k in self._results if not self._waiting(k)]:
            if outputs >= MAX_MESSAGE_OUTPUTS_BYTES:
                break  # the rest in the next message
            result = self._results.pop(key)
            result.last_sequence = self._jobs[key].seq if key in self._jobs else 0
            msg.results.append(result)
            self._sent_results[key] = result
            outputs += len(result.outputs)
        self._changed.set()
        return msg

    def _waiting(self, key: Key) -> bool:
        """The attempt's result must wait: it has logs or archive chunks still to send."""
        job = self._jobs.get(key)
        if job is not None and job.has_logs():
            return True
        upload = self._uploads.get(key)
        return upload is not None and not upload.done

    def _take_artifacts(self, msg: worker_pb2.AgentMessage) -> None:
        """Archive chunks within the per-message budget, oldest attempt first."""
        budget = MAX_MESSAGE_ARTIFACT_BYTES
        for (job_id, attempt), up in self._uploads.items():
            while not up.done and budget > 0:
                archive = up.archive
                size = min(ARTIFACT_CHUNK, archive.size - up.offset, budget)
                try:
                    data = archive.read(up.offset, size) if size > 0 else b""
                except OSError as exc:  # the server sees it short: the attempt fails
                    log.error("artifacts of job %s cannot be read: %s", job_id, exc)
                    data = b""
                up.done = not data or up.offset + len(data) >= archive.size
                chunk = msg.artifacts.add(
                    job_id=job_id, attempt=attempt, offset=up.offset, data=data, last=up.done
                )
                if up.done:
                    chunk.sha256, chunk.size = archive.sha256, archive.size
                up.offset += len(data)
                budget -= max(1, len(data))

    def _discard_upload(self, key: Key) -> None:
        upload = self._uploads.pop(key, None)
        if upload is not None:
            upload.archive.discard()

    def discard_uploads(self) -> None:
        """The session is over: no archive will be sent any more."""
        for key in list(self._uploads):
            self._discard_upload(key)

    def _take_logs(self, key: Key, job: _Attempt, msg: worker_pb2.AgentMessage, budget: int) -> int:
        """Move this attempt's chunks into msg within the budget; return the bytes taken."""
        taken = 0
        while job.resend and taken < budget:
            chunk = job.resend.popleft()
            msg.logs.append(chunk)
            job.unacked.append(chunk)
            taken += len(chunk.data)
        if job.resend:
            return taken
        size = min(len(job.pending), max(0, budget - taken))
        for start in range(0, size, self._chunk_size):
            job.seq += 1
            # stream stays STDOUT (the default): a PTY merges stdout and stderr.
            chunk = worker_pb2.LogChunk(
                job_id=key[0],
                attempt=key[1],
                sequence=job.seq,
                timestamp_ns=job.pending_ts,
                offset=job.offset,
                data=bytes(job.pending[start : min(start + self._chunk_size, size)]),
            )
            job.offset += len(chunk.data)
            msg.logs.append(chunk)
            job.unacked.append(chunk)
            job.unacked_bytes += len(chunk.data)
        del job.pending[:size]
        return taken + size

    # ---- acks and resend -----------------------------------------------------------------

    def ack_logs(self, job_id: str, attempt: int, sequence: int) -> None:
        """The server persisted this attempt's chunks up to `sequence`: forget them."""
        job = self._jobs.get((job_id, attempt))
        if job is None:
            return
        while job.unacked and job.unacked[0].sequence <= sequence:
            job.unacked_bytes -= len(job.unacked.popleft().data)
        if job.buffered() < self._max_job:
            job.open()
        self._changed.set()

    def ack_result(self, job_id: str, attempt: int) -> None:
        """The server settled this attempt (accepted or refused): forget all of it."""
        key = (job_id, attempt)
        self._sent_results.pop(key, None)
        self._results.pop(key, None)
        self._discard_upload(key)
        job = self._jobs.pop(key, None)
        if job is not None:
            job.open()
        self._ready.pop(key, None)
        self._changed.set()

    def unacked(self) -> worker_pb2.AgentMessage:
        """A copy of what was sent and not yet acked (logs in order, then results)."""
        msg = worker_pb2.AgentMessage()
        for job in self._jobs.values():
            msg.logs.extend(job.unacked)
        msg.results.extend(self._sent_results.values())
        return msg

    def rewind(self) -> None:
        """After a reconnect: send every unacked chunk and result again, before anything new."""
        for key, job in self._jobs.items():
            job.resend = job.unacked + job.resend
            job.unacked = deque()
            if job.has_logs():
                self._ready[key] = None
        self._results = {**self._sent_results, **self._results}
        self._sent_results.clear()
        for upload in self._uploads.values():  # the archive goes again whole, before its result
            upload.offset, upload.done = 0, False
        if self.has_pending():
            self._wake.set()

    def held(self) -> list[Key]:
        """Attempts with output or a result the server has not acked yet."""
        return list({**dict.fromkeys(self._jobs), **self._results, **self._sent_results})

    def settled(self) -> bool:
        """Nothing left to send and no result awaiting its ack."""
        return not self.has_pending() and not self._sent_results

    async def wait_settled(self, limit_s: float) -> bool:
        """Wait (at most limit_s seconds) until settled(); return whether it is."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while not self.settled():
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return self.settled()
        return True
