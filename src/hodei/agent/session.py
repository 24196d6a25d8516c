"""The agent's session: dial out, register with the OTP, then run what the server assigns.

One bidirectional HWP stream carries everything. Three tasks share it: the sender (drains the
Outbox, so sends batch while a write is in flight), the receiver (assignments, cancels, acks,
shutdown) and the heartbeat. Exit codes: 0 stopped on request (signal or Shutdown), 1 the
connection failed (first connect, or no reconnect within the grace period), 3 the server
refused the token (never retried: an OTP is single-use).

When an established stream drops, the jobs keep running: the agent reconnects with exponential
backoff and jitter, presenting the session's resume token (from RegisterAck) and the attempts it
holds, then resends every unacked log chunk and result (the server drops what it already has,
by offset). If it cannot get back within the server's grace period it kills its jobs itself, so
no job runs unseen; the server has requeued or failed them by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeAlias, cast

import grpc

import hodei
from hodei._proto.hodei.v1 import worker_pb2, worker_pb2_grpc
from hodei.agent.artifacts import InputStaging, Spool, StagedInput
from hodei.agent.job_files import run_with_files
from hodei.agent.metrics import capacity, usage
from hodei.agent.outbox import Key, Outbox
from hodei.agent.runner import Executor, JobOutcome, run_job
from hodei.agent.tls import AgentTls, keep_renewed
from hodei.agent.tracing import NoRunTracing, RunTracing
from hodei.agent.wire import assignment_from_wire, inputs_from_wire, result_to_wire
from hodei.domain.masking import mask_all
from hodei.domain.work import AGENT_FAILED, NOT_RUN, Assignment
from hodei.errors import AuthError, HodeiError

log = logging.getLogger("hodei.agent")

EXIT_OK = 0
EXIT_DISCONNECTED = 1
EXIT_REFUSED = 3
REGISTER_TIMEOUT_S = 30.0
SETTLE_S = 5.0  # when stopping, how long results may take to be acked
DEFAULT_HEARTBEAT_MS = 5000
DEFAULT_GRACE_MS = 30_000
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 5.0
MAX_MESSAGE = 16 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
]
REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)

# The Connect call as the agent holds it; read() gives a ServerMessage or EOF.
Stream: TypeAlias = grpc.aio.StreamStreamCall[worker_pb2.AgentMessage, worker_pb2.ServerMessage]
EOF: object = grpc.aio.EOF


def grpc_target(server_url: str) -> str:
    """'host:port', 'http://host:port' or 'grpc://host:port/' -> 'host:port'."""
    target = server_url.strip()
    for scheme in ("grpc://", "http://", "https://"):
        if target.startswith(scheme):
            target = target[len(scheme) :]
    return target.rstrip("/")


@dataclass(slots=True)
class _Job:
    assign: Assignment
    cancel: asyncio.Event
    grace_s: float
    inputs: list[StagedInput]  # its input archives as they came (unpacked before it starts)


class AgentSession:
    """One agent's life: see the module docstring."""

    def __init__(
        self,
        server_url: str,
        otp: str,
        labels: dict[str, str],
        slots: int,
        cancel_grace_s: float = 5.0,
        *,
        handle_signals: bool = True,
        executor: Executor = run_job,
        tls: AgentTls | None = None,
        image: str = "",
        tracing: RunTracing | None = None,
    ) -> None:
        self.target = grpc_target(server_url)
        self._tracing = tracing or NoRunTracing()  # a run span per attempt, in its trace
        self._image = image  # the job image it was started in, told to the server
        self._tls = tls  # mTLS: enroll with the OTP first, then connect with a certificate
        self._channel: grpc.aio.Channel | None = None
        self._channel_generation = -1  # the certificate generation the channel presents
        self.session_id = ""  # from RegisterAck; a reconnect presents it again
        self.worker_id = ""
        self._otp = otp
        self._labels = dict(labels)
        self._slots = slots
        self._grace = cancel_grace_s
        self._handle_signals = handle_signals
        self._execute = executor
        self._outbox = Outbox()
        self._spool = Spool()  # archives, inputs and outputs files, private to this agent
        self._staging = InputStaging(self._spool)
        self._jobs: dict[Key, _Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting = True
        self._stop = asyncio.Event()
        self._shutdown_grace_s: float | None = None  # set by a server Shutdown
        self._resume_token = ""  # from RegisterAck: reconnects without the (spent) OTP
        self._grace_period_s = DEFAULT_GRACE_MS / 1000

    # ---- lifecycle -----------------------------------------------------------------------

    async def run(self) -> int:
        """Connect, serve until told to stop or the stream drops; return the exit code."""
        loop = asyncio.get_running_loop()
        installed = self._install_signals(loop) if self._handle_signals else []
        renewer: asyncio.Task[None] | None = None
        try:
            if self._tls is not None:
                refused = await self._enroll(self._tls)
                if refused is not None:
                    return refused
                renewer = asyncio.create_task(
                    keep_renewed(self._tls, self.target, CHANNEL_OPTIONS), name="cert-renew"
                )
            return await self._session()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self._kill_all()  # whatever happened, no job outlives the session
            self._staging.clear()
            self._outbox.discard_uploads()
            self._spool.close()
            if renewer is not None:
                renewer.cancel()
                await asyncio.gather(renewer, return_exceptions=True)
            await self._close_channel()

    async def _enroll(self, tls: AgentTls) -> int | None:
        """Spend the OTP for a client certificate; the exit code when that fails."""
        try:
            await tls.enroll(self._otp)
        except AuthError as exc:
            log.error("the server refused this agent's token at enrollment: %s", exc.message)
            return EXIT_REFUSED
        except HodeiError as exc:
            log.error("enrollment failed: %s", exc.message)
            return EXIT_DISCONNECTED
        self._otp = ""  # spent: from now on the certificate is the credential
        log.info("enrolled as worker %s (certificate %s)", tls.worker_id, tls.serial)
        return None

    async def _stub(self) -> worker_pb2_grpc.WorkerServiceStub:
        """A stub on a channel that presents the current certificate: after a renewal the next
        connection gets a new channel (a live stream keeps its own until it ends)."""
        generation = self._tls.generation if self._tls is not None else 0
        if self._channel is None or generation != self._channel_generation:
            await self._close_channel()  # between streams: nothing runs on it any more
            if self._tls is None:
                self._channel = grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
            else:
                creds = self._tls.credentials()
                self._channel = grpc.aio.secure_channel(self.target, creds, CHANNEL_OPTIONS)
            self._channel_generation = generation
        return worker_pb2_grpc.WorkerServiceStub(self._channel)  # type: ignore[no-untyped-call]

    async def _close_channel(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    def request_stop(self) -> None:
        """Stop as on SIGTERM: cancel running jobs, report their results, exit 0."""
        self._stop.set()

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        installed: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                continue
            installed.append(sig)
        return installed

    def _on_signal(self, sig: int) -> None:
        if self._stop.is_set():  # a second signal: no more grace
            log.warning("%s again: killing running jobs now", signal.Signals(sig).name)
            self._cancel_all(0.0)
            return
        log.info("%s: stopping (running jobs are cancelled)", signal.Signals(sig).name)
        self._stop.set()

    async def _session(self) -> int:
        """Register, serve, and after a drop reconnect (with backoff and jitter) and resume the
        session, jobs still running, until the server's grace period runs out."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None  # when set: be back by then, or kill the jobs
        backoff = BACKOFF_MIN_S
        while True:
            resuming = bool(self._resume_token)
            call: Stream = (await self._stub()).Connect()
            ack = await self._register(call)
            if isinstance(ack, int):
                if ack == EXIT_OK or deadline is None:
                    return ack
                if ack == EXIT_REFUSED:
                    log.error("the server no longer knows this session; killing its jobs")
                    return EXIT_DISCONNECTED
            else:
                self._adopt(ack.register_ack, resuming)
                self._dispatch(ack)  # what the server queued while we were away came along
                deadline, backoff = None, BACKOFF_MIN_S
                beat_ms = ack.register_ack.heartbeat_interval_ms or DEFAULT_HEARTBEAT_MS
                code = await self._serve(call, beat_ms / 1000)
                if code == EXIT_OK or not self._resume_token:
                    return code
                deadline = loop.time() + self._grace_period_s
                log.warning(
                    "reconnecting to %s; %d job(s) keep running for up to %.0fs",
                    self.target,
                    len(self._jobs),
                    self._grace_period_s,
                )
            if not await self._pause(
                min(backoff * (0.5 + random.random()), deadline - loop.time())
            ):
                return EXIT_OK  # asked to stop while disconnected
            if loop.time() >= deadline:
                log.error("could not reach %s within the grace period; killing jobs", self.target)
                return EXIT_DISCONNECTED
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _adopt(self, ack: worker_pb2.RegisterAck, resumed: bool) -> None:
        self.session_id, self.worker_id = ack.session_id, ack.worker_id
        self._resume_token = ack.resume_token
        self._grace_period_s = (ack.grace_ms or DEFAULT_GRACE_MS) / 1000
        self._staging.clear()  # what a dropped stream left half sent: the server sends it again
        if resumed:
            self._outbox.rewind()  # what was not acked goes again, in order, before new output
            log.info("resumed session with %s as worker %s", self.target, self.worker_id)
        else:
            log.info("registered with %s as worker %s", self.target, self.worker_id)

    async def _pause(self, seconds: float) -> bool:
        """Sleep, unless asked to stop first (then False)."""
        try:
            await asyncio.wait_for(self._stop.wait(), max(0.0, seconds))
        except TimeoutError:
            return True
        return False

    # ---- registration --------------------------------------------------------------------

    def _register_message(self) -> worker_pb2.AgentMessage:
        held = {**dict.fromkeys(self._jobs), **dict.fromkeys(self._outbox.held())}
        running = [worker_pb2.RunningJob(job_id=k[0], attempt=k[1]) for k in held]
        return worker_pb2.AgentMessage(
            register=worker_pb2.Register(
                otp="" if self._resume_token else self._otp,
                resume_token=self._resume_token,
                hostname=socket.gethostname(),
                labels=self._labels,
                capacity=capacity(self._slots),
                agent_version=hodei.__version__,
                pid=os.getpid(),
                session_id=self.session_id,
                running=running,
                image=self._image,
            )
        )

    async def _register(self, call: Stream) -> worker_pb2.ServerMessage | int:
        """The server's first message (it carries the RegisterAck), or the exit code."""
        try:
            await call.write(self._register_message())
            reply = await self._read_unless_stopped(call)
        except TimeoutError:
            log.error("no answer from %s to registration in %.0fs", self.target, REGISTER_TIMEOUT_S)
            return EXIT_DISCONNECTED
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            return self._failed(await call.code(), await call.details())
        if reply is None:
            return EXIT_OK
        if reply is EOF:
            return self._failed(await call.code(), await call.details())
        if not reply.HasField("register_ack"):
            log.error("protocol error: the server's first message is not a RegisterAck")
            return EXIT_DISCONNECTED
        return reply

    async def _read_unless_stopped(self, call: Stream) -> worker_pb2.ServerMessage | None:
        """The next message (or EOF); None when asked to stop first; TimeoutError."""
        read = asyncio.ensure_future(call.read())
        stop = asyncio.ensure_future(self._stop.wait())
        done, _ = await asyncio.wait(
            {read, stop}, timeout=REGISTER_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        stop.cancel()
        if read in done:
            return cast(worker_pb2.ServerMessage, read.result())  # may be EOF
        read.cancel()
        call.cancel()
        if stop not in done:
            raise TimeoutError
        return None

    def _failed(self, code: grpc.StatusCode, details: str | None) -> int:
        if code in REFUSED:
            log.error(
                "the server refused this agent's token (%s: %s); not retrying: a worker "
                "token is single-use, start the agent with a fresh one",
                code.name,
                details,
            )
            return EXIT_REFUSED
        log.error("connection to %s failed: %s %s", self.target, code.name, details or "")
        return EXIT_DISCONNECTED

    # ---- serving -------------------------------------------------------------------------

    async def _serve(self, call: Stream, heartbeat_s: float) -> int:
        sender = asyncio.create_task(self._send_loop(call), name="hwp-send")
        receiver = asyncio.create_task(self._receive_loop(call), name="hwp-receive")
        heart = asyncio.create_task(self._heartbeat_loop(heartbeat_s), name="hwp-heartbeat")
        stop = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait(
                {sender, receiver, stop}, return_when=asyncio.FIRST_COMPLETED
            )
            if stop in done:
                await self._wind_down(call, sender, receiver)
                return EXIT_OK
            self._report_drop(sender if sender in done else receiver)
            return EXIT_DISCONNECTED
        finally:
            for task in (sender, receiver, heart, stop):
                task.cancel()
            await asyncio.gather(sender, receiver, heart, stop, return_exceptions=True)

    async def _send_loop(self, call: Stream) -> None:
        while True:
            await call.write(await self._outbox.next_message())

    async def _receive_loop(self, call: Stream) -> None:
        while True:
            msg = await call.read()
            if msg is EOF:
                return
            self._dispatch(cast(worker_pb2.ServerMessage, msg))

    async def _heartbeat_loop(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self._outbox.set_heartbeat(usage())

    def _report_drop(self, task: asyncio.Task[None]) -> None:
        exc = task.exception()
        if isinstance(exc, grpc.aio.AioRpcError):
            why = f"{exc.code().name} {exc.details() or ''}".strip()
        else:
            why = repr(exc) if exc else "the server closed the stream"
        log.error("connection to %s lost (%s)", self.target, why)

    async def _wind_down(
        self, call: Stream, sender: asyncio.Task[None], receiver: asyncio.Task[None]
    ) -> None:
        """Stop taking jobs, let them finish (Shutdown grace) or cancel them, report, close."""
        self._accepting = False
        if self._shutdown_grace_s and self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self._shutdown_grace_s)
        self._cancel_all(self._grace)
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        settle = asyncio.create_task(self._outbox.wait_settled(SETTLE_S))
        await asyncio.wait({settle, sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        settle.cancel()
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await call.done_writing()
        await asyncio.wait({receiver}, timeout=1.0)  # let the server end the stream cleanly
        log.info("stopped")

    # ---- server messages -----------------------------------------------------------------

    def _dispatch(self, msg: worker_pb2.ServerMessage) -> None:
        for data in msg.inputs:  # before the assignments they are for
            self._staging.receive(data.key, data.offset, data.data, data.last)
        for assign in msg.assignments:
            inputs = self._staging.claim(inputs_from_wire(assign)) if assign.inputs else []
            self._assign(assignment_from_wire(assign), inputs)
        for cancel in msg.cancels:
            self._cancel(cancel)
        for ack in msg.log_acks:
            self._outbox.ack_logs(ack.job_id, ack.attempt, ack.sequence)
        for rack in msg.result_acks:
            if not rack.accepted:
                log.warning("server refused the result of job %s: %s", rack.job_id, rack.reason)
            self._outbox.ack_result(rack.job_id, rack.attempt)
        if msg.HasField("shutdown"):
            log.info("server asked to shut down: %s", msg.shutdown.reason or "no reason given")
            self._shutdown_grace_s = msg.shutdown.grace_ms / 1000
            self._stop.set()

    def _assign(self, assign: Assignment, inputs: list[StagedInput]) -> None:
        key = (assign.job_id, assign.attempt)
        if key in self._jobs or not self._accepting:
            for item in inputs:  # not run here: its inputs are not needed
                item.discard()
            if key in self._jobs:
                log.warning("job %s attempt %d is already running here", *key)
            else:
                error = "agent is shutting down; job not started"
                refused = JobOutcome(exit_code=NOT_RUN, error=error)
                self._outbox.add_result(result_to_wire(assign.job_id, assign.attempt, refused))
            return
        if len(self._jobs) >= self._slots:
            log.warning("job %s assigned beyond this agent's %d slots", assign.job_id, self._slots)
        job = _Job(assign, asyncio.Event(), self._grace, inputs)
        self._jobs[key] = job
        task = asyncio.create_task(self._run_job(job), name=f"job-{assign.job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cancel(self, cancel: worker_pb2.CancelJob) -> None:
        job = self._jobs.get((cancel.job_id, cancel.attempt))
        if job is None:  # already finished: its result is on its way
            return
        if cancel.grace_ms:  # 0 means the agent's default grace
            job.grace_s = cancel.grace_ms / 1000
        log.info("cancelling job %s: %s", cancel.job_id, cancel.reason or "requested")
        job.cancel.set()

    def _cancel_all(self, grace_s: float) -> None:
        for job in self._jobs.values():
            job.grace_s = min(job.grace_s, grace_s)
            job.cancel.set()

    async def _kill_all(self) -> None:
        self._cancel_all(0.0)
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    # ---- running a job -------------------------------------------------------------------

    async def _run_job(self, job: _Job) -> None:
        a, end_span = self._tracing.start(job.assign)
        key = (a.job_id, a.attempt)
        started: Callable[[int], None] = partial(self._started, a.job_id, a.attempt)
        try:
            finished = await run_with_files(
                self._execute,
                a,
                job.inputs,
                self._spool,
                partial(self._outbox.add_log, a.job_id, a.attempt),
                job.cancel,
                grace=lambda: job.grace_s,
                on_started=started,
            )
            outcome, outputs, archive = finished.outcome, finished.outputs, finished.archive
        except Exception as exc:  # a bug here must still give the server a result
            log.exception("job %s failed in the agent", a.job_id)
            error = mask_all(f"agent error: {exc!r}".encode(), a.secrets.values())
            outcome = JobOutcome(exit_code=AGENT_FAILED, error=error.decode("utf-8", "replace"))
            outputs, archive = b"", None
        finally:
            self._jobs.pop(key, None)
        end_span(outcome.exit_code, outcome.error)
        log.debug(
            "job %s finished: exit %d%s",
            a.job_id,
            outcome.exit_code,
            " (cancelled)" if outcome.cancelled else " (timed out)" if outcome.timed_out else "",
        )
        result = result_to_wire(
            a.job_id, a.attempt, outcome, time.time_ns(), outputs=outputs, archive=archive
        )
        self._outbox.add_result(result, archive)

    def _started(self, job_id: str, attempt: int, pid: int) -> None:
        log.debug("job %s started: pid %d", job_id, pid)
        self._outbox.add_update(job_id, attempt, worker_pb2.JobStatusUpdate.STARTED, pid)
