"""A worker's stream as the core sees it: the WorkerChannel of one agent connection.

Everything queued here leaves together in the stream's next ServerMessage (one write per loop
turn, however many assignments, cancels and acks a burst produced). A dropped stream closes the
channel; a resumed one reopens it under a new generation, and the old writer, if still
waiting, sees that and ends.

An assignment with inputs waits in an InputTransfer (server.api.grpc.artifacts): its archives
leave first, a piece per message, then it does. One transfer at a time, and its AssignJob is
the last thing of it in its message: the agent takes a message's input data before its
assignments, and discards what the next assignment with inputs does not claim.
"""

from __future__ import annotations

import asyncio
from collections import deque

from hodei._proto.hodei.v1 import worker_pb2 as pb
from hodei.domain.work import Assignment
from hodei.ports import ArtifactStore
from hodei.server.api.grpc.artifacts import InputTransfer
from hodei.server.api.grpc.wire import add_assignment, cancel_message


class StreamChannel:
    def __init__(
        self,
        resume_token: str,
        artifacts: ArtifactStore | None = None,
        max_artifact_bytes: int = 0,
    ) -> None:
        """`artifacts`: where input archives are read (None: every input is missing);
        `max_artifact_bytes`: the limit of an assignment that names none."""
        self.resume_token = resume_token
        self._artifacts = artifacts
        self._max_artifact = max_artifact_bytes
        self._transfers: deque[InputTransfer] = deque()
        self.closed = False
        self.generation = 0  # which attached stream is current (a resumed one replaces the old)
        self._out = pb.ServerMessage()
        self._has_out = False
        self._log_acks: dict[tuple[str, int], int] = {}
        self._wake = asyncio.Event()
        self.handler: asyncio.Task[None] | None = None  # the RPC serving the current stream
        self.restart_reason = ""  # set when restart() ended that stream

    def _kick(self) -> None:
        self._has_out = True
        self._wake.set()

    # ---- WorkerChannel ---------------------------------------------------------------------
    def assign(self, assignment: Assignment) -> None:
        if assignment.inputs:
            self._transfers.append(InputTransfer.of(assignment, self._artifacts, self.generation))
        else:
            add_assignment(self._out.assignments, assignment, (), self._max_artifact)
        self._kick()

    def unassign(self, job_id: str, attempt: int) -> bool:
        for i, assign in enumerate(self._out.assignments):
            if assign.job_id == job_id and assign.attempt == attempt:
                del self._out.assignments[i]
                return True
        for transfer in self._transfers:
            if (transfer.assignment.job_id, transfer.assignment.attempt) == (job_id, attempt):
                self._transfers.remove(transfer)
                return True
        return False

    def drop_assignments(self) -> None:
        del self._out.assignments[:]
        self._transfers.clear()

    def cancel(self, job_id: str, attempt: int, grace_ms: int, reason: str) -> None:
        message = cancel_message(job_id, attempt, grace_ms, reason)
        for transfer in self._transfers:
            if (transfer.assignment.job_id, transfer.assignment.attempt) == (job_id, attempt):
                # Its AssignJob has not left: the cancel must not overtake it (the agent would
                # not know the job yet, then run it), so it follows it, in the same message.
                transfer.cancel = message
                self._kick()
                return
        self._out.cancels.append(message)
        self._kick()

    def shutdown(self, reason: str, grace_ms: int) -> None:
        self._out.shutdown.CopyFrom(pb.Shutdown(reason=reason, grace_ms=grace_ms))
        self._kick()

    def ack_log(self, job_id: str, attempt: int, seq: int) -> None:
        self._log_acks[(job_id, attempt)] = seq
        self._kick()

    def ack_result(self, job_id: str, attempt: int, accepted: bool, reason: str = "") -> None:
        self._out.result_acks.append(
            pb.ResultAck(job_id=job_id, attempt=attempt, accepted=accepted, reason=reason)
        )
        self._kick()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    def reopen(self) -> None:
        self.closed = False
        self.generation += 1
        self._wake.set()

    def restart(self, reason: str) -> None:
        if self.handler is not None and not self.handler.done():
            self.restart_reason = reason
            self.handler.cancel()

    # ---- the stream's side -----------------------------------------------------------------
    def serve(self, handler: asyncio.Task[None]) -> None:
        """`handler` serves the stream from now on (a resumed stream replaces the old)."""
        self.handler = handler
        self.restart_reason = ""

    def register_ack(
        self, worker_id: str, session_id: str, heartbeat_ms: int, grace_ms: int
    ) -> None:
        self._out.register_ack.CopyFrom(
            pb.RegisterAck(
                worker_id=worker_id,
                session_id=session_id,
                heartbeat_interval_ms=heartbeat_ms,
                resume_token=self.resume_token,
                grace_ms=grace_ms,
            )
        )
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
        if self._transfers:
            self._feed(msg, generation)
        self._has_out = bool(self._transfers)  # more of it in the next message
        return msg

    def _feed(self, msg: pb.ServerMessage, generation: int) -> None:
        """The next piece of the first transfer; its AssignJob once it is all out."""
        transfer = self._transfers[0]
        if transfer.generation != generation:
            transfer.restart(generation)  # what the old stream carried is lost with it
        if transfer.fill(self._artifacts, msg):
            self._transfers.popleft()
            add_assignment(
                msg.assignments, transfer.assignment, transfer.inputs, self._max_artifact
            )
            if transfer.cancel is not None:
                msg.cancels.append(transfer.cancel)  # the agent reads it after the assignment
