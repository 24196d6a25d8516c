"""AgentSession against a real in-process grpc.aio WorkerService on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator

import grpc
import psutil
import pytest

from hodei._proto.hodei.v1 import worker_pb2, worker_pb2_grpc
from hodei.agent.runner import JobOutcome
from hodei.agent.session import AgentSession, grpc_target
from hodei.domain.work import AGENT_FAILED, Assignment

GOOD_OTP = "good-otp"


class Servicer(worker_pb2_grpc.WorkerServiceServicer):
    """Registers the agent, assigns `jobs`, records what comes back and acks it.

    With `shutdown_after_results`, it sends Shutdown once every job has a result; with
    `drop_after_start`, it ends the stream as soon as a job reports STARTED.
    """

    def __init__(
        self,
        jobs: list[worker_pb2.AssignJob],
        *,
        shutdown_after_results: bool = True,
        drop_after_start: bool = False,
    ) -> None:
        self.jobs = jobs
        self.shutdown_after_results = shutdown_after_results
        self.drop_after_start = drop_after_start
        self.register: worker_pb2.Register | None = None
        self.logs: list[worker_pb2.LogChunk] = []
        self.updates: list[worker_pb2.JobStatusUpdate] = []
        self.results: list[worker_pb2.JobResult] = []
        self.heartbeats = 0
        self.started = asyncio.Event()

    async def Connect(
        self,
        request_iterator: AsyncIterator[worker_pb2.AgentMessage],
        context: grpc.aio.ServicerContext[worker_pb2.AgentMessage, worker_pb2.ServerMessage],
    ) -> AsyncIterator[worker_pb2.ServerMessage]:
        first = await anext(aiter(request_iterator))
        if first.register.otp != GOOD_OTP:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown or used token")
        self.register = first.register
        yield worker_pb2.ServerMessage(
            register_ack=worker_pb2.RegisterAck(
                worker_id="w-1", session_id="s-1", heartbeat_interval_ms=50
            )
        )
        yield worker_pb2.ServerMessage(assignments=self.jobs)
        async for msg in request_iterator:
            reply = self.record(msg)
            if self.drop_after_start and self.updates:
                self.started.set()
                return
            if self.shutdown_after_results and len(self.results) == len(self.jobs):
                reply.shutdown.CopyFrom(worker_pb2.Shutdown(reason="test over"))
            if reply.ByteSize():
                yield reply

    def record(self, msg: worker_pb2.AgentMessage) -> worker_pb2.ServerMessage:
        assert not msg.HasField("register")
        self.heartbeats += msg.HasField("heartbeat")
        self.logs.extend(msg.logs)
        self.updates.extend(msg.updates)
        self.results.extend(msg.results)
        if msg.updates:
            self.started.set()
        reply = worker_pb2.ServerMessage()
        for chunk in msg.logs:
            reply.log_acks.add(job_id=chunk.job_id, attempt=chunk.attempt, sequence=chunk.sequence)
        for result in msg.results:
            reply.result_acks.add(job_id=result.job_id, attempt=result.attempt, accepted=True)
        return reply

    def output(self, job_id: str) -> bytes:
        return b"".join(
            c.data for c in sorted(self.logs, key=lambda c: c.sequence) if c.job_id == job_id
        )


async def serve(servicer: Servicer) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"http://127.0.0.1:{port}"


def agent(url: str, otp: str = GOOD_OTP) -> AgentSession:
    return AgentSession(
        url, otp, {"pool": "test"}, slots=2, cancel_grace_s=2.0, handle_signals=False
    )


def job(job_id: str, command: str) -> worker_pb2.AssignJob:
    return worker_pb2.AssignJob(job_id=job_id, attempt=1, command=command)


async def test_runs_a_job_and_reports_logs_and_result() -> None:
    servicer = Servicer([job("j1", "sleep 0.2; echo hi; exit 4")])
    server, url = await serve(servicer)
    try:
        code = await asyncio.wait_for(agent(url).run(), 20)
    finally:
        await server.stop(None)
    assert code == 0
    assert servicer.register is not None
    assert servicer.register.labels == {"pool": "test"}
    assert servicer.register.capacity.slots == 2
    assert servicer.register.hostname == socket.gethostname()
    assert servicer.output("j1") == b"hi\n"
    assert [u.phase for u in servicer.updates] == [worker_pb2.JobStatusUpdate.STARTED]
    (result,) = servicer.results
    assert (result.job_id, result.exit_code, result.cancelled, result.error) == ("j1", 4, False, "")
    assert result.last_sequence == max(c.sequence for c in servicer.logs)
    assert servicer.heartbeats >= 1


async def test_executor_gets_an_assignment_and_its_failure_is_a_masked_agent_failure() -> None:
    seen: list[Assignment] = []

    async def broken(assign: Assignment, *_: object, **__: object) -> JobOutcome:
        seen.append(assign)
        raise RuntimeError(f"bug near {assign.secrets['TOKEN']}")

    wire = worker_pb2.AssignJob(
        job_id="j1", attempt=1, command="true", secrets={"TOKEN": "s3cr3t"}, timeout_ms=1500
    )
    servicer = Servicer([wire])
    server, url = await serve(servicer)
    session = AgentSession(url, GOOD_OTP, {}, slots=1, handle_signals=False, executor=broken)
    try:
        code = await asyncio.wait_for(session.run(), 20)
    finally:
        await server.stop(None)
    assert code == 0
    assert [(a.job_id, a.secrets, a.timeout_s) for a in seen] == [("j1", {"TOKEN": "s3cr3t"}, 1.5)]
    (result,) = servicer.results
    assert result.exit_code == AGENT_FAILED  # the agent's fault: a bounded platform fault
    assert "bug near ***" in result.error and "s3cr3t" not in result.error


async def test_bad_otp_exits_3() -> None:
    servicer = Servicer([])
    server, url = await serve(servicer)
    try:
        code = await asyncio.wait_for(agent(url, otp="stale").run(), 20)
    finally:
        await server.stop(None)
    assert code == 3


async def test_no_server_exits_1() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert await asyncio.wait_for(agent(f"127.0.0.1:{port}").run(), 20) == 1


async def test_stop_request_cancels_jobs_and_reports_them() -> None:
    servicer = Servicer([job("long", "echo up; sleep 300")], shutdown_after_results=False)
    server, url = await serve(servicer)
    session = agent(url)
    try:
        run = asyncio.create_task(session.run())
        await asyncio.wait_for(servicer.started.wait(), 10)
        pid = servicer.updates[0].pid
        session.request_stop()
        code = await asyncio.wait_for(run, 10)
    finally:
        await server.stop(None)
    assert code == 0
    (result,) = servicer.results
    assert result.cancelled
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_dropped_stream_kills_jobs_and_exits_1() -> None:
    servicer = Servicer([job("long", "sleep 300")], drop_after_start=True)
    server, url = await serve(servicer)
    try:
        code = await asyncio.wait_for(agent(url).run(), 10)
    finally:
        await server.stop(None)
    assert code == 1
    pid = servicer.updates[0].pid
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051"),
        ("http://host:1/", "host:1"),
        ("grpc://host:2", "host:2"),
    ],
)
def test_grpc_target(url: str, target: str) -> None:
    assert grpc_target(url) == target


async def test_many_jobs_batched_on_one_stream() -> None:
    jobs = [job(f"j{i}", 'echo "out $HODEI_JOB_ID"') for i in range(30)]
    servicer = Servicer(jobs)
    server, url = await serve(servicer)
    try:
        code = await asyncio.wait_for(agent(url).run(), 30)
    finally:
        await server.stop(None)
    assert code == 0
    assert sorted(r.job_id for r in servicer.results) == sorted(j.job_id for j in jobs)
    for j in jobs:
        assert servicer.output(j.job_id) == f"out {j.job_id}\n".encode()


AGENT_MAIN = (
    "import sys\n"
    "from hodei.agent.main import run_agent\n"
    "sys.exit(run_agent(sys.argv[1], sys.argv[2], {}, 1, cancel_grace_s=2.0))\n"
)


async def start_agent_process(url: str, otp: str = GOOD_OTP) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", AGENT_MAIN, url, otp, env=env, stderr=asyncio.subprocess.PIPE
    )


async def test_agent_process_runs_job_and_exits_on_shutdown() -> None:
    servicer = Servicer([job("j1", "echo hi; exit 4")])
    server, url = await serve(servicer)
    try:
        proc = await start_agent_process(url)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await server.stop(None)
    assert proc.returncode == 0, stderr
    assert servicer.output("j1") == b"hi\n"
    assert servicer.results[0].exit_code == 4


async def test_agent_process_refused_token_exits_3() -> None:
    server, url = await serve(Servicer([]))
    try:
        proc = await start_agent_process(url, otp="replayed")
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await server.stop(None)
    assert proc.returncode == 3
    assert b"refused" in stderr


async def test_agent_process_sigterm_cancels_jobs_and_exits_0() -> None:
    servicer = Servicer([job("long", "sleep 300")], shutdown_after_results=False)
    server, url = await serve(servicer)
    try:
        proc = await start_agent_process(url)
        await asyncio.wait_for(servicer.started.wait(), 30)
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await server.stop(None)
    assert proc.returncode == 0, stderr
    (result,) = servicer.results
    assert result.cancelled
    pid = servicer.updates[0].pid
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
