"""Connected workers: one WorkerSession per agent stream, with a batching outbox, and the
registry the scheduler reads its snapshot from."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hodei._proto.hodei.v1 import worker_pb2 as pb
from hodei.domain.jobs import Job
from hodei.domain.scheduling import WorkerView


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
    early_logs: list[pb.LogChunk] = field(default_factory=list)  # came before `committed`


async def assignment_stored(held: HeldJob) -> bool:
    """Wait for the `assigned` write of `held` (at once when done); False if it failed."""
    pending = held.committed
    if pending is None:
        return True
    if not pending.done():
        await asyncio.shield(pending)  # a cancelled waiter must not cancel it for the others
    return pending.result()


@dataclass(slots=True)
class WorkerSession:
    view: WorkerView
    hostname: str
    provider: str  # "local", "static", ...
    session_id: str
    pid: int = 0
    connected_at: float = field(default_factory=time.time)
    last_heartbeat: float = field(default_factory=time.time)
    last_busy: float = field(default_factory=time.monotonic)
    usage: pb.ResourceUsage = field(default_factory=pb.ResourceUsage)
    jobs: dict[str, HeldJob] = field(default_factory=dict)
    closed: bool = False  # no stream attached (dropped, or gone for good)
    resume_token: str = ""
    shutdown_sent: bool = False
    process_gone: bool = False  # its provider saw the process end: it cannot come back
    grace_timer: asyncio.TimerHandle | None = None  # set while a dropped session may resume
    generation: int = 0  # which attached stream is current (a resumed one replaces the old)
    _out: pb.ServerMessage = field(default_factory=pb.ServerMessage)
    _has_out: bool = False
    _log_acks: dict[tuple[str, int], int] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def id(self) -> str:
        return self.view.id

    # ---- outbox: everything queued here leaves in the next ServerMessage -----------------------
    def _kick(self) -> None:
        self._has_out = True
        self._wake.set()

    def send_register_ack(self, heartbeat_ms: int, grace_ms: int) -> None:
        self._out.register_ack.CopyFrom(
            pb.RegisterAck(
                worker_id=self.id,
                session_id=self.session_id,
                heartbeat_interval_ms=heartbeat_ms,
                resume_token=self.resume_token,
                grace_ms=grace_ms,
            )
        )
        self._kick()

    def send_assign(self, assign: pb.AssignJob) -> None:
        self._out.assignments.append(assign)
        self._kick()

    def send_cancel(self, cancel: pb.CancelJob) -> None:
        self._out.cancels.append(cancel)
        self._kick()

    def ack_log(self, job_id: str, attempt: int, seq: int) -> None:
        self._log_acks[(job_id, attempt)] = seq
        self._kick()

    def ack_result(self, job_id: str, attempt: int, accepted: bool, reason: str = "") -> None:
        self._out.result_acks.append(
            pb.ResultAck(job_id=job_id, attempt=attempt, accepted=accepted, reason=reason)
        )
        self._kick()

    def unsend_assign(self, job_id: str, attempt: int) -> bool:
        """Take an assignment back out of the outbox; False when it has already left."""
        for i, assign in enumerate(self._out.assignments):
            if assign.job_id == job_id and assign.attempt == attempt:
                del self._out.assignments[i]
                return True
        return False

    def drop_queued_assignments(self) -> None:
        del self._out.assignments[:]

    def send_shutdown(self, reason: str, grace_ms: int) -> None:
        self.view.accepting = False
        self.shutdown_sent = True
        self._out.shutdown.CopyFrom(pb.Shutdown(reason=reason, grace_ms=grace_ms))
        self._kick()

    async def next_message(self, generation: int = 0) -> pb.ServerMessage | None:
        """Wait for pending output and take all of it as one message; None once closed or
        once a resumed stream (a newer `generation`) has taken over."""
        waited = False
        while not self._has_out or self.generation != generation:
            if self.closed or self.generation != generation:
                return None
            self._wake.clear()
            await self._wake.wait()
            waited = True
        if waited:
            # Woken from idle: two loop turns (no timer) let what the same event starts join
            # this message, e.g. the next assignment for the slot a result's ack frees.
            for _ in range(2):
                await asyncio.sleep(0)
            if self.closed or self.generation != generation:
                return None  # the output waits for a resumed stream
        msg, self._out = self._out, pb.ServerMessage()
        for (job_id, attempt), seq in self._log_acks.items():
            msg.log_acks.append(pb.LogAck(job_id=job_id, attempt=attempt, sequence=seq))
        self._log_acks.clear()
        self._has_out = False
        return msg

    def close(self) -> None:
        """Detach the stream: the writer stops; queued output waits for a resumed stream."""
        self.closed = True
        self.view.accepting = False
        self._wake.set()

    def reattach(self) -> None:
        """A resumed stream: send what was queued meanwhile and take jobs again."""
        if self.grace_timer is not None:
            self.grace_timer.cancel()
            self.grace_timer = None
        self.closed = False
        self.view.accepting = not self.shutdown_sent
        self.generation += 1
        self._wake.set()  # an old writer still waiting sees the new generation and ends


class WorkerRegistry:
    def __init__(self) -> None:
        self._sessions: dict[str, WorkerSession] = {}
        # Told of every worker that connects here (the cluster records which server holds it).
        self.on_add: Callable[[WorkerSession], None] = lambda session: None

    def add(self, session: WorkerSession) -> None:
        self._sessions[session.id] = session
        self.on_add(session)

    def remove(self, session: WorkerSession) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]

    def get(self, worker_id: str | None) -> WorkerSession | None:
        return self._sessions.get(worker_id) if worker_id else None

    def sessions(self) -> list[WorkerSession]:
        return list(self._sessions.values())

    def views(self) -> list[WorkerView]:
        return [s.view for s in self._sessions.values() if not s.closed]

    def __len__(self) -> int:
        return len(self._sessions)
