"""Connected workers: one WorkerSession per agent stream (what it holds, and the channel the
core talks to it through), and the registry the scheduler reads its snapshot from."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Protocol

from hodei.domain.jobs import Job
from hodei.domain.scheduling import WorkerView
from hodei.domain.work import Assignment, LogReport, Usage
from hodei.server.core.bus import EventBus, WorkerConnected


@dataclass(slots=True)
class HeldJob:
    job_id: str
    attempt: int
    job: Job  # as last written by this server: the base of the next compare-and-swap
    cancel_sent: bool = False
    # The assignment leaves before its `assigned` write commits (one commit fewer between
    # submit and start); this resolves to whether that write succeeded, and whatever the
    # agent reports about the attempt is applied only after it (see dispatch.Dispatcher.dispatch).
    committed: asyncio.Future[bool] | None = None
    started_at: float | None = None  # start reported with the result: stored with it
    early_logs: list[LogReport] = field(default_factory=list)  # came before `committed`
    traceparent: str = ""  # the attempt's trace context, sent with its assignment


async def assignment_stored(held: HeldJob) -> bool:
    """Wait for the `assigned` write of `held` (at once when done); False if it failed."""
    pending = held.committed
    if pending is None:
        return True
    if not pending.done():
        await asyncio.shield(pending)  # a cancelled waiter must not cancel it for the others
    return pending.result()


class WorkerChannel(Protocol):
    """How the core talks to one connected worker. What is sent here leaves together in the
    stream's next message; the gRPC edge implements it (server.api.grpc.channel)."""

    def assign(self, assignment: Assignment) -> None: ...

    def unassign(self, job_id: str, attempt: int) -> bool:
        """Take an assignment back before it leaves; False when it has already left."""
        ...

    def drop_assignments(self) -> None:
        """Forget every assignment not sent yet (a resumed stream decides them again)."""
        ...

    def cancel(self, job_id: str, attempt: int, grace_ms: int, reason: str) -> None: ...

    def shutdown(self, reason: str, grace_ms: int) -> None: ...

    def ack_log(self, job_id: str, attempt: int, seq: int) -> None: ...

    def ack_result(self, job_id: str, attempt: int, accepted: bool, reason: str = "") -> None: ...

    def close(self) -> None:
        """No stream is attached any more: stop writing; what is queued waits for a new one."""
        ...

    def reopen(self) -> None:
        """A resumed stream is attached: send what was queued meanwhile."""
        ...

    def restart(self, reason: str) -> None:
        """End the current stream (the agent reconnects within the grace period and sends
        again everything not acknowledged: what the server could not store before)."""
        ...


@dataclass(slots=True)
class WorkerSession:
    view: WorkerView
    hostname: str
    provider: str  # "local", "static", ...
    session_id: str
    channel: WorkerChannel
    pid: int = 0
    connected_at: float = field(default_factory=time.time)
    last_heartbeat: float = field(default_factory=time.time)
    last_busy: float = field(default_factory=time.monotonic)
    usage: Usage = field(default_factory=Usage)
    jobs: dict[str, HeldJob] = field(default_factory=dict)
    closed: bool = False  # no stream attached (dropped, or gone for good)
    shutdown_sent: bool = False
    process_gone: bool = False  # its provider saw the process end: it cannot come back
    gone_why: str = ""  # what the provider said of that end, for its jobs' reasons
    grace_timer: asyncio.TimerHandle | None = None  # set while a dropped session may resume
    disconnected_at: float | None = None  # when its stream dropped (None while attached)
    reconnect_by: float | None = None  # when the grace period of a dropped stream ends
    # The store refused one of its reports: the rest wait (unacked, kept by the agent) until
    # the stream restarts; `store_retry_s` is the wait before the next restart.
    store_blocked: bool = False
    store_retry_s: float = 0.0

    @property
    def id(self) -> str:
        return self.view.id

    def cancel(self, held: HeldJob, grace_ms: int, reason: str) -> None:
        """Ask the worker to end `held` (once: a repeat is sent only by cancel_again)."""
        if not held.cancel_sent:
            held.cancel_sent = True
            self.channel.cancel(held.job_id, held.attempt, grace_ms, reason)

    def cancel_again(self, held: HeldJob, grace_ms: int, reason: str) -> None:
        """The first cancel may have died with a dropped stream: send it again."""
        held.cancel_sent = True
        self.channel.cancel(held.job_id, held.attempt, grace_ms, reason)

    def drop_attempt(self, job_id: str, attempt: int, reason: str) -> None:
        """Tell the worker to end an attempt that is not (or no longer) its own, at once."""
        self.channel.cancel(job_id, attempt, 0, reason)

    def shut_down(self, reason: str, grace_ms: int) -> None:
        self.view.accepting = False
        self.shutdown_sent = True
        self.channel.shutdown(reason, grace_ms)

    def close(self) -> None:
        """Detach the stream: the writer stops; queued output waits for a resumed stream."""
        self.closed = True
        self.view.accepting = False
        if self.disconnected_at is None:
            self.disconnected_at = time.time()
        self.channel.close()

    def reattach(self) -> None:
        """A resumed stream: send what was queued meanwhile and take jobs again."""
        if self.grace_timer is not None:
            self.grace_timer.cancel()
            self.grace_timer = None
        self.closed = False
        self.disconnected_at = self.reconnect_by = None
        self.view.accepting = not self.shutdown_sent
        self.channel.reopen()


class WorkerRegistry:
    def __init__(self, bus: EventBus) -> None:
        self._sessions: dict[str, WorkerSession] = {}
        self._bus = bus  # told of every worker that connects (the cluster records where)

    def add(self, session: WorkerSession) -> None:
        self._sessions[session.id] = session
        self._bus.publish(WorkerConnected(session.id))

    def remove(self, session: WorkerSession) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]

    def get(self, worker_id: str | None) -> WorkerSession | None:
        return self._sessions.get(worker_id) if worker_id else None

    def held(self, job_id: str, worker_id: str | None) -> tuple[WorkerSession, HeldJob] | None:
        """The session holding `job_id` on `worker_id`, with its attempt, if connected here."""
        session = self._sessions.get(worker_id) if worker_id else None
        held = session.jobs.get(job_id) if session is not None else None
        return (session, held) if session is not None and held is not None else None

    def sessions(self) -> list[WorkerSession]:
        return list(self._sessions.values())

    def views(self) -> list[WorkerView]:
        return [s.view for s in self._sessions.values() if not s.closed]

    def __len__(self) -> int:
        return len(self._sessions)
