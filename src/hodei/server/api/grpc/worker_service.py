"""gRPC WorkerService: one bidirectional HWP stream per agent.

The first message must be a Register carrying a valid single-use OTP; after that the stream
carries batches both ways. Each AgentMessage is handled in the proto's order: logs (stored,
deduplicated by sequence, acked once per job), then artifact chunks, status updates, results.

Artifacts (server.api.grpc.artifacts): chunks go into the ArtifactStore as they come; a
result is handed to the core only once its outputs are stored, and as a failure if the
archive it names is not the one stored.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any, NoReturn

import grpc

from hodei._proto.hodei.v1 import worker_pb2 as pb
from hodei._proto.hodei.v1 import worker_pb2_grpc
from hodei.domain.scheduling import WorkerView
from hodei.errors import AuthError, HodeiError
from hodei.ports import ArtifactStore
from hodei.server.api.grpc.artifacts import Intake, result_problem
from hodei.server.api.grpc.channel import StreamChannel
from hodei.server.api.grpc.wire import usage_from_wire
from hodei.server.core.passes import PassSignal
from hodei.server.core.provisioning import Provisioner
from hodei.server.core.recovery import Recovery
from hodei.server.core.reports import Reports
from hodei.server.core.workers import WorkerRegistry, WorkerSession
from hodei.server.security.audit import Auditor
from hodei.server.security.otp import OtpRegistry, Redeemed, ResumeTokens, source_host

log = logging.getLogger(__name__)

MAX_LABELS = 64
REPORT_BACKLOG = 64  # agent messages read but not applied yet, per stream


class WorkerService(worker_pb2_grpc.WorkerServiceServicer):
    def __init__(
        self,
        otps: OtpRegistry,
        tokens: ResumeTokens,
        registry: WorkerRegistry,
        reports: Reports,
        recovery: Recovery,
        provisioner: Provisioner,
        passes: PassSignal,
        auditor: Auditor | None,
        heartbeat_ms: int,
        *,
        artifacts: ArtifactStore,
        max_artifact_bytes: int,
    ) -> None:
        """`artifacts`: where archives and outputs of attempts are kept; `max_artifact_bytes`:
        an archive's limit."""
        self.otps = otps
        self.tokens = tokens
        self.registry = registry
        self.reports = reports
        self.recovery = recovery
        self.provisioner = provisioner
        self.passes = passes
        self.auditor = auditor
        self.heartbeat_ms = heartbeat_ms
        self.artifacts = artifacts
        self.max_artifact_bytes = max_artifact_bytes

    async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        first = await context.read()
        if first is grpc.aio.EOF or not first.HasField("register"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first message must be Register")
        reg = first.register
        session = await (
            self._resume(reg, context) if reg.resume_token else self._register(reg, context)
        )
        channel = stream_of(session)
        generation = channel.generation
        grace_ms = int(self.recovery.grace_s * 1000)
        channel.register_ack(session.id, session.session_id, self.heartbeat_ms, grace_ms)
        writer = asyncio.create_task(self._write_loop(session, channel, context, generation))
        # Starts and results wait for store commits; applying them here would stop the
        # stream's reading (and its log output) behind every commit. They go, in order, to a
        # task of their own; logs and heartbeats are taken in at once.
        reports: asyncio.Queue[pb.AgentMessage | None] = asyncio.Queue(REPORT_BACKLOG)
        # This stream's uploads: a resumed stream starts its own (the agent sends every
        # archive again from offset 0), while this one may still apply what it read.
        intake = Intake(self.artifacts, session.id, self.max_artifact_bytes)
        reporter = asyncio.create_task(self._report_loop(session, reports, intake))
        self.passes.kick()
        task = asyncio.current_task()
        assert task is not None  # a gRPC handler always runs in a task
        channel.serve(task)
        try:
            while True:
                msg = await context.read()
                if msg is grpc.aio.EOF:
                    break
                self.take_in(session, msg)
                if msg.updates or msg.results or msg.artifacts:
                    await reports.put(msg)  # blocks only with REPORT_BACKLOG unapplied
        except asyncio.CancelledError:
            if not channel.restart_reason:
                raise  # the server is stopping
            # Restarted by the core (StreamChannel.restart): the agent reconnects and resends.
            await context.abort(grpc.StatusCode.UNAVAILABLE, channel.restart_reason)
        finally:
            writer.cancel()
            try:
                await reports.put(None)  # what was read is applied before the end is handled
                await reporter
            except asyncio.CancelledError:
                reporter.cancel()
                raise
            finally:
                intake.close()
                if channel.generation == generation:  # not taken over by a resumed stream
                    log.info("worker %s stream ended", session.id)
                    self.recovery.stream_ended(session)

    async def _refuse(self, context: grpc.aio.ServicerContext, why: str) -> NoReturn:
        log.warning("refused worker from %s: %s", context.peer(), why)
        if self.auditor is not None:
            await self.auditor.denied(f"peer:{context.peer()}", "worker.refused", "", why)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, why)
        raise AssertionError("abort returns only by raising")

    async def _register(self, reg: pb.Register, context: grpc.aio.ServicerContext) -> WorkerSession:
        try:
            grant = self._grant(reg, context)
        except AuthError as exc:
            await self._refuse(context, exc.message)
        if len(reg.labels) > MAX_LABELS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "too many labels")
        session = self._new_session(
            reg, grant.worker_id, secrets.token_hex(8), grant.labels, grant.image
        )
        old = self.registry.get(session.id)
        if old is not None:
            old.close()
            await self.recovery.worker_gone(old)
        self.registry.add(session)
        self.provisioner.registered(session.id)
        log.info(
            "worker %s registered (%s, %d slot(s))",
            session.id,
            session.hostname,
            session.view.slots,
        )
        if self.auditor is not None:
            detail = f"host {session.hostname}, {session.view.slots} slot(s)"
            await self.auditor.record(f"worker:{session.id}", "worker.register", session.id, detail)
        return session

    async def _resume(self, reg: pb.Register, context: grpc.aio.ServicerContext) -> WorkerSession:
        try:
            worker_id, session_id = self.tokens.verify(reg.resume_token)
            self._check_peer(worker_id, context)
        except AuthError as exc:
            await self._refuse(context, exc.message)
        if session_id in self.recovery.expired:
            await self._refuse(context, "session expired: its jobs were requeued or settled")
        session = self.registry.get(worker_id)
        if session is not None and session.session_id == session_id:
            await self.recovery.reattach(session, reg.running)
            log.info("worker %s resumed its session", worker_id)
            return session
        if session is not None:
            await self._refuse(context, "this worker has a newer session")
        # Unknown here: the server restarted since. Take the worker and its jobs back.
        session = self._new_session(reg, worker_id, session_id, {})
        self.registry.add(session)
        await self.recovery.adopt(session, reg.running)
        log.info("worker %s reconnected after a server restart", worker_id)
        return session

    def _grant(self, reg: pb.Register, context: grpc.aio.ServicerContext) -> Redeemed:
        """What entitles this new session: the OTP (AuthError if it is not valid). The mTLS
        service (server.security.mtls) also takes the peer's certificate."""
        return self.otps.redeem(reg.otp, source_host(context.peer()))

    def _check_peer(self, worker_id: str, context: grpc.aio.ServicerContext) -> None:
        """Hook: AuthError when the connection may not act as `worker_id` (mtls_worker)."""

    def _new_session(
        self,
        reg: pb.Register,
        worker_id: str,
        session_id: str,
        grant_labels: dict[str, str],
        grant_image: str | None = None,
    ) -> WorkerSession:
        cap = reg.capacity
        view = WorkerView(
            id=worker_id,
            labels={**dict(reg.labels), **grant_labels},  # the grant's labels win
            slots=max(1, min(cap.slots or 1, 1024)),
            cpus=cap.cpus,
            memory_bytes=cap.memory_bytes,
            # The grant's image wins; an agent that resumes (no grant) or that an operator
            # started in an image of their own says which.
            image=grant_image or reg.image[:255] or None,
        )
        provider = (
            self.provisioner.provider.name if worker_id in self.provisioner.owned else "static"
        )
        return WorkerSession(
            view=view,
            hostname=reg.hostname[:255],
            provider=provider,
            session_id=session_id,
            channel=StreamChannel(
                self.tokens.issue(worker_id, session_id), self.artifacts, self.max_artifact_bytes
            ),
            pid=reg.pid,
        )

    async def _write_loop(
        self,
        session: WorkerSession,
        channel: StreamChannel,
        context: grpc.aio.ServicerContext,
        generation: int,
    ) -> None:
        try:
            while (msg := await channel.next_message(generation)) is not None:
                await context.write(msg)
        except (asyncio.CancelledError, grpc.aio.AioRpcError, grpc.RpcError):
            pass
        except Exception:
            log.exception("writing to worker %s failed", session.id)

    async def handle(
        self, session: WorkerSession, msg: pb.AgentMessage, intake: Intake | None = None
    ) -> None:
        """One message, all of it: take_in, then apply its artifacts, starts and results
        (without `intake`, the stream's uploads, an archive must come whole in `msg`)."""
        self.take_in(session, msg)
        if intake is not None:
            await self.apply_reports(session, msg, intake)
            return
        intake = Intake(self.artifacts, session.id, self.max_artifact_bytes)
        try:
            await self.apply_reports(session, msg, intake)
        finally:
            intake.close()

    def take_in(self, session: WorkerSession, msg: pb.AgentMessage) -> None:
        """What needs no store write: the heartbeat, and log output (durable in the log
        store, in order per attempt; see Reports.store_logs)."""
        if msg.HasField("heartbeat"):
            session.usage = usage_from_wire(msg.heartbeat.usage)
            session.last_heartbeat = time.time()
        if msg.logs:
            self.reports.store_logs(session, msg.logs)

    async def _report_loop(
        self,
        session: WorkerSession,
        reports: asyncio.Queue[pb.AgentMessage | None],
        intake: Intake,
    ) -> None:
        while (msg := await reports.get()) is not None:
            try:
                await self.apply_reports(session, msg, intake)
            except Exception:
                log.exception("reports of worker %s not applied", session.id)

    async def apply_reports(
        self, session: WorkerSession, msg: pb.AgentMessage, intake: Intake
    ) -> None:
        """Artifact chunks (into the stream's `intake`), starts, then results, of one message
        (results after their job's logs: take_in ran first)."""
        if msg.artifacts:
            await self._take_artifacts(session, msg.artifacts, intake)
        if msg.updates:
            # A start reported with its result (a short job) is stored with the result.
            ended = {(r.job_id, r.attempt) for r in msg.results}
            starts = [u for u in msg.updates if u.phase == pb.JobStatusUpdate.STARTED]
            for u in starts:
                if (u.job_id, u.attempt) in ended:
                    await self.reports.on_started(session, u, with_result=True)
            await asyncio.gather(
                *(
                    self.reports.on_started(session, u)
                    for u in starts
                    if (u.job_id, u.attempt) not in ended
                )
            )
        if msg.results:
            await asyncio.gather(*(self._result(session, r) for r in msg.results))

    async def _take_artifacts(
        self, session: WorkerSession, chunks: Sequence[pb.ArtifactChunk], intake: Intake
    ) -> None:
        mine = [c for c in chunks if _holds(session, c.job_id, c.attempt)]
        if len(mine) < len(chunks):
            log.warning("worker %s sent artifacts of attempts it does not hold", session.id)
        if mine:
            await asyncio.to_thread(intake.take, mine)  # writes, and fsyncs on commit

    async def _with_files(self, session: WorkerSession, result: pb.JobResult) -> pb.JobResult:
        """The result with its outputs stored, or turned into a failure when its archive is
        not the one stored (or its outputs cannot be)."""
        held = session.jobs.get(result.job_id)
        if held is None or held.attempt != result.attempt:
            return result  # the core refuses it
        if not (result.outputs or result.artifact_sha256 or held.job.spec.artifacts):
            return result
        problem = result_problem(self.artifacts, result)
        if not result.artifact_sha256 and held.job.spec.artifacts and _succeeded(result):
            problem = "no artifact archive came with the result (is the worker's agent too old?)"
        if result.outputs:
            try:
                await asyncio.to_thread(
                    self.artifacts.put_outputs, result.job_id, result.attempt, result.outputs
                )
            except (HodeiError, ValueError) as exc:
                problem = problem or f"outputs could not be stored: {exc}"
        if problem:
            log.warning("result of job %s attempt %d: %s", result.job_id, result.attempt, problem)
            failed = pb.JobResult()
            failed.CopyFrom(result)
            failed.error = result.error or problem
            return failed
        return result

    async def _result(self, session: WorkerSession, result: pb.JobResult) -> None:
        try:
            result = await self._with_files(session, result)
            await self.reports.on_result(session, result)
        except HodeiError as exc:
            log.error("result of job %s not recorded: %s", result.job_id, exc.message)


def _succeeded(result: pb.JobResult) -> bool:
    return result.exit_code == 0 and not (
        result.error or result.signal or result.cancelled or result.timed_out
    )


def _holds(session: WorkerSession, job_id: str, attempt: int) -> bool:
    held = session.jobs.get(job_id)
    return held is not None and held.attempt == attempt


def stream_of(session: WorkerSession) -> StreamChannel:
    """The gRPC stream channel of a session this service made."""
    channel = session.channel
    assert isinstance(channel, StreamChannel)
    return channel
