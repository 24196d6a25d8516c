"""gRPC WorkerService: one bidirectional HWP stream per agent.

The first message must be a Register carrying a valid single-use OTP; after that the stream
carries batches both ways. Each AgentMessage is handled in the proto's order: logs (stored,
deduplicated by sequence, acked once per job), then status updates, then results.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

import grpc

from hodei._proto.hodei.v1 import worker_pb2 as pb
from hodei._proto.hodei.v1 import worker_pb2_grpc
from hodei.domain.scheduling import WorkerView
from hodei.errors import AuthError, HodeiError
from hodei.server.loghub import LogHub
from hodei.server.otp import OtpRegistry
from hodei.server.provisioning import Provisioner
from hodei.server.scheduler import Scheduler
from hodei.server.workers import WorkerRegistry, WorkerSession

log = logging.getLogger(__name__)

MAX_LABELS = 64


class WorkerService(worker_pb2_grpc.WorkerServiceServicer):
    def __init__(
        self,
        otps: OtpRegistry,
        registry: WorkerRegistry,
        scheduler: Scheduler,
        hub: LogHub,
        provisioner: Provisioner,
        heartbeat_ms: int,
    ) -> None:
        self.otps = otps
        self.registry = registry
        self.scheduler = scheduler
        self.hub = hub
        self.provisioner = provisioner
        self.heartbeat_ms = heartbeat_ms

    async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        first = await context.read()
        if first is grpc.aio.EOF or not first.HasField("register"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first message must be Register")
        session = await self._register(first.register, context)
        writer = asyncio.create_task(self._write_loop(session, context))
        self.scheduler.kick()
        try:
            while True:
                msg = await context.read()
                if msg is grpc.aio.EOF:
                    break
                await self.handle(session, msg)
        finally:
            writer.cancel()
            log.info("worker %s disconnected", session.id)
            await self.scheduler.on_worker_lost(session)

    async def _register(
        self,
        reg: pb.Register,
        context: grpc.aio.ServicerContext,
    ) -> WorkerSession:
        try:
            grant = self.otps.redeem(reg.otp)
        except AuthError as exc:
            peer = context.peer()
            log.warning("refused worker registration from %s: %s", peer, exc.message)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message)
            raise  # abort raises; this keeps type checkers aware
        if len(reg.labels) > MAX_LABELS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "too many labels")
        labels = {**dict(reg.labels), **grant.labels}  # the grant's labels win
        cap = reg.capacity
        view = WorkerView(
            id=grant.worker_id,
            labels=labels,
            slots=max(1, min(cap.slots or 1, 1024)),
            cpus=cap.cpus,
            memory_bytes=cap.memory_bytes,
        )
        provider = (
            self.provisioner.provider.name
            if grant.worker_id in self.provisioner.owned
            else "static"
        )
        session = WorkerSession(
            view=view,
            hostname=reg.hostname[:255],
            provider=provider,
            session_id=secrets.token_hex(8),
            pid=reg.pid,
        )
        old = self.registry.get(session.id)
        if old is not None:
            await self.scheduler.on_worker_lost(old)
        self.registry.add(session)
        self.provisioner.registered(session.id)
        session.send_register_ack(self.heartbeat_ms)
        log.info("worker %s registered (%s, %d slot(s))", session.id, session.hostname, view.slots)
        return session

    async def _write_loop(
        self,
        session: WorkerSession,
        context: grpc.aio.ServicerContext,
    ) -> None:
        try:
            while (msg := await session.next_message()) is not None:
                await context.write(msg)
        except (asyncio.CancelledError, grpc.aio.AioRpcError, grpc.RpcError):
            pass
        except Exception:
            log.exception("writing to worker %s failed", session.id)

    async def handle(self, session: WorkerSession, msg: pb.AgentMessage) -> None:
        if msg.HasField("heartbeat"):
            session.usage = msg.heartbeat.usage
            session.last_heartbeat = time.time()
        if msg.logs:
            self._store_logs(session, msg.logs)
        if msg.updates:
            await asyncio.gather(
                *(
                    self.scheduler.on_started(session, u)
                    for u in msg.updates
                    if u.phase == pb.JobStatusUpdate.STARTED
                )
            )
        if msg.results:
            await asyncio.gather(*(self._result(session, r) for r in msg.results))

    async def _result(self, session: WorkerSession, result: pb.JobResult) -> None:
        try:
            await self.scheduler.on_result(session, result)
        except HodeiError as exc:
            log.error("result of job %s not recorded: %s", result.job_id, exc.message)

    def _store_logs(self, session: WorkerSession, chunks: Any) -> None:
        acked: dict[tuple[str, int], int] = {}
        for chunk in chunks:
            held = session.jobs.get(chunk.job_id)
            if held is None or held.attempt != chunk.attempt:
                continue  # not this worker's job (or a stale attempt): never stored
            try:
                self.hub.append(chunk.job_id, chunk.attempt, chunk.sequence, chunk.data)
            except HodeiError as exc:
                log.error("log of job %s not stored: %s", chunk.job_id, exc.message)
                break  # unacked: the agent keeps the bytes and sends them again
            acked[(chunk.job_id, chunk.attempt)] = self.hub.last_seq(chunk.job_id, chunk.attempt)
        for (job_id, attempt), seq in acked.items():
            session.ack_log(job_id, attempt, seq)
