"""Backpressure with real processes: while the server does not ack, the agent stops reading the
job's PTY at the bound of unacknowledged output, the job blocks on its writes, and once acks come
every byte arrives, in order, exactly once. Timeout, cancel and masking work across a pause."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import psutil

from hodei._proto.hodei.v1 import worker_pb2, worker_pb2_grpc
from hodei.agent.outbox import Outbox
from hodei.agent.runner import READ_SIZE, run_job
from hodei.domain.work import Assignment

BOUND = 1 << 20
LINES = 400_000  # of 100 bytes: 40 MB
# Numbered lines, written 1000 at a time; `lines(n)` is the same bytes.
GENERATOR = (
    "import sys\n"
    "w = sys.stdout.buffer.write\n"
    "for i in range(0, {n}, 1000):\n"
    "    w(b''.join(b'%09d %s\\n' % (j, b'x' * 89) for j in range(i, min(i + 1000, {n}))))\n"
)
FOREVER = (
    "import itertools, sys\n"
    "w = sys.stdout.buffer.write\n"
    "for i in itertools.count():\n"
    "    w(b'%09d %s\\n' % (i, b'x' * 89))\n"
)


def lines(n: int) -> bytes:
    return b"".join(b"%09d %s\n" % (j, b"x" * 89) for j in range(n))


def a_prefix_of_forever(data: bytes) -> bool:
    """The bytes FOREVER writes first, whole lines or not."""
    full = len(data) // 100 + 1
    return lines(full).startswith(data)


def python_job(code: str, **fields: Any) -> Assignment:
    return Assignment(
        job_id="job1", attempt=1, command=sys.executable, arguments=("-c", code), **fields
    )


async def until(condition: Callable[[], bool], limit_s: float = 20) -> None:
    async with asyncio.timeout(limit_s):
        while not condition():  # noqa: ASYNC110 (polling state that has no event)
            await asyncio.sleep(0.02)


class Sender:
    """Drains an Outbox as the session's sender does; acks only once `release()` is called.

    Records the chunks taken, the most the attempt ever held (`peak`) and how often the runner
    was told to wait (`pauses`)."""

    def __init__(self, bound: int, ack_delay_s: float = 0.0) -> None:
        self.box = Outbox(max_job_bytes=bound)
        self.chunks: list[worker_pb2.LogChunk] = []
        self.acking = False
        self.ack_delay_s = ack_delay_s
        self.peak = 0
        self.pauses = 0
        self.last_change = time.monotonic()
        self._task = asyncio.create_task(self._run())

    def on_output(self, data: bytes) -> asyncio.Future[None] | None:
        room = self.box.add_log("job1", 1, data)
        self.peak = max(self.peak, self.box.buffered("job1", 1))
        self.pauses += room is not None
        self.last_change = time.monotonic()
        return room

    async def _run(self) -> None:
        while True:
            msg = await self.box.next_message()
            self.chunks.extend(msg.logs)
            if msg.logs:
                self.last_change = time.monotonic()
            if self.acking:
                await asyncio.sleep(self.ack_delay_s)
                self._ack()

    def _ack(self) -> None:
        if self.chunks:
            self.box.ack_logs("job1", 1, self.chunks[-1].sequence)

    def release(self) -> None:
        self.acking = True
        self._ack()

    def idle_for(self, seconds: float) -> bool:
        return time.monotonic() - self.last_change >= seconds

    def data(self) -> bytes:
        return b"".join(c.data for c in self.chunks)

    def check_exactly_once_in_order(self) -> None:
        assert [c.sequence for c in self.chunks] == list(range(1, len(self.chunks) + 1))
        offset = 0
        for chunk in self.chunks:
            assert chunk.offset == offset
            offset += len(chunk.data)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def blocked(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


async def test_a_job_blocks_at_the_bound_and_every_byte_arrives_once_acks_come() -> None:
    sender = Sender(BOUND)
    pids: list[int] = []
    try:
        run = asyncio.create_task(
            run_job(
                python_job(GENERATOR.format(n=LINES)),
                sender.on_output,
                asyncio.Event(),
                on_started=pids.append,
            )
        )
        # No acks: the attempt fills to its bound, then nothing moves for a while.
        await until(lambda: sender.box.buffered("job1", 1) >= BOUND and sender.idle_for(0.5))
        assert not run.done()
        assert pids and blocked(pids[0])  # the job is alive, stuck in its write
        assert len(sender.data()) < LINES * 100
        assert sender.peak <= BOUND + READ_SIZE

        sender.release()
        async with asyncio.timeout(60):
            outcome = await run
        assert (outcome.exit_code, outcome.error) == (0, "")
        assert sender.peak <= BOUND + READ_SIZE
        await until(lambda: sender.box.settled() or sender.box.buffered("job1", 1) == 0, 10)
    finally:
        await sender.close()
    sender.check_exactly_once_in_order()
    data = sender.data()
    expected = lines(LINES)
    assert len(data) == len(expected)
    assert hashlib.sha256(data).digest() == hashlib.sha256(expected).digest()


async def test_a_paused_job_can_be_cancelled_and_its_held_output_still_arrives() -> None:
    sender = Sender(64 * 1024)
    cancel = asyncio.Event()
    pids: list[int] = []
    try:
        run = asyncio.create_task(
            run_job(
                python_job(FOREVER), sender.on_output, cancel, grace=1.0, on_started=pids.append
            )
        )
        await until(lambda: sender.pauses > 0 and sender.idle_for(0.3))
        cancel.set()
        async with asyncio.timeout(10):  # no ack needed to stop it
            outcome = await run
        assert outcome.cancelled and outcome.exit_code == 128 + 15
        assert not blocked(pids[0])
        held = sender.box.buffered("job1", 1)
        assert held > 0
        sender.release()
        await until(lambda: sender.box.buffered("job1", 1) == 0, 10)
    finally:
        await sender.close()
    sender.check_exactly_once_in_order()
    assert a_prefix_of_forever(sender.data())


async def test_a_paused_job_times_out_and_its_output_arrives_when_acks_come() -> None:
    sender = Sender(64 * 1024)
    pids: list[int] = []
    try:
        run = asyncio.create_task(
            run_job(
                python_job(FOREVER, timeout_s=1.0),
                sender.on_output,
                asyncio.Event(),
                grace=0.5,
                on_started=pids.append,
            )
        )
        await until(lambda: bool(pids) and not blocked(pids[0]), 10)  # ended while paused
        await asyncio.sleep(0.3)
        assert not run.done()  # the rest of its output waits for room: nothing is lost
        sender.release()
        async with asyncio.timeout(10):
            outcome = await run
        assert outcome.timed_out and not outcome.cancelled
        assert sender.peak <= 64 * 1024 + READ_SIZE
        await until(lambda: sender.box.buffered("job1", 1) == 0, 10)
    finally:
        await sender.close()
    sender.check_exactly_once_in_order()
    assert a_prefix_of_forever(sender.data())


SECRET = "tok-S3cr3t-4711"
MASKED_JOB = (
    "import os, sys\n"
    "w = sys.stdout.buffer.write\n"
    "s = os.environ['S'].encode()\n"
    "for i in range(0, 20000, 7):\n"
    "    w(b''.join(b'%06d %s|' % (j, s) for j in range(i, min(i + 7, 20000))))\n"
)


async def test_masking_holds_across_pauses() -> None:
    # A small bound and slow acks: the PTY is read in many pieces, paused between many of
    # them, and secrets straddle the pieces; the masker keeps a partial match across a pause.
    sender = Sender(4096, ack_delay_s=0.001)
    sender.release()
    try:
        job = python_job(MASKED_JOB, secrets={"S": SECRET})
        async with asyncio.timeout(60):
            outcome = await run_job(job, sender.on_output, asyncio.Event())
        assert outcome.exit_code == 0
        await until(lambda: sender.box.buffered("job1", 1) == 0, 10)
    finally:
        await sender.close()
    data = sender.data()
    assert sender.pauses >= 10
    assert SECRET.encode() not in data
    assert data == b"".join(b"%06d ***|" % j for j in range(20000))
    assert sender.peak <= 4096 + READ_SIZE


# ---- the agent process against a server that holds its acks back ----------------------------

AGENT_MAIN = (
    "import sys\n"
    "from hodei.agent.main import run_agent\n"
    "sys.exit(run_agent(sys.argv[1], 'otp', {}, 1, cancel_grace_s=2.0))\n"
)


class HoldingServicer(worker_pb2_grpc.WorkerServiceServicer):
    """Registers the agent, assigns `job` once `assign` is set, reads everything the agent
    sends, and acks nothing until `acking` is set (then all of it, and a Shutdown once the
    result came)."""

    def __init__(self, job: worker_pb2.AssignJob) -> None:
        self.job = job
        self.assign = asyncio.Event()
        self.acking = asyncio.Event()
        self.registered = asyncio.Event()
        self.logs: list[worker_pb2.LogChunk] = []
        self.updates: list[worker_pb2.JobStatusUpdate] = []
        self.results: list[worker_pb2.JobResult] = []
        self.received = 0
        self.acked = 0

    async def Connect(
        self,
        request_iterator: AsyncIterator[worker_pb2.AgentMessage],
        context: grpc.aio.ServicerContext[worker_pb2.AgentMessage, worker_pb2.ServerMessage],
    ) -> AsyncIterator[worker_pb2.ServerMessage]:
        await anext(aiter(request_iterator))
        yield worker_pb2.ServerMessage(
            register_ack=worker_pb2.RegisterAck(
                worker_id="w-1", session_id="s-1", heartbeat_interval_ms=50
            )
        )
        self.registered.set()
        await self.assign.wait()
        yield worker_pb2.ServerMessage(assignments=[self.job])
        async for msg in request_iterator:  # heartbeats keep coming while the agent is paused
            self.logs.extend(msg.logs)
            self.updates.extend(msg.updates)
            self.results.extend(msg.results)
            self.received += sum(len(c.data) for c in msg.logs)
            if not self.acking.is_set():
                continue
            reply = worker_pb2.ServerMessage()
            if self.logs and self.acked < self.logs[-1].sequence:
                self.acked = self.logs[-1].sequence
                reply.log_acks.add(job_id=self.job.job_id, attempt=1, sequence=self.acked)
            for result in self.results:
                reply.result_acks.add(job_id=result.job_id, attempt=1, accepted=True)
                reply.shutdown.CopyFrom(worker_pb2.Shutdown(reason="test over"))
            if reply.ByteSize():
                yield reply


async def test_agent_process_pauses_the_job_while_the_server_holds_acks_back() -> None:
    code = GENERATOR.format(n=LINES)
    servicer = HoldingServicer(
        worker_pb2.AssignJob(
            job_id="flood", attempt=1, command=sys.executable, arguments=["-c", code]
        )
    )
    server = grpc.aio.server()
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "HODEI_AGENT_MAX_UNACKED": str(BOUND),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        AGENT_MAIN,
        f"127.0.0.1:{port}",
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(20):
            await servicer.registered.wait()
        await asyncio.sleep(0.5)
        agent = psutil.Process(proc.pid)
        baseline = agent.memory_info().rss
        servicer.assign.set()
        peak_rss = baseline
        last, still_since = -1, time.monotonic()
        async with asyncio.timeout(30):  # until the agent has sent much, then nothing for 1 s
            while servicer.received < BOUND // 2 or time.monotonic() - still_since < 1.0:
                await asyncio.sleep(0.02)
                peak_rss = max(peak_rss, agent.memory_info().rss)
                if servicer.received != last:
                    last, still_since = servicer.received, time.monotonic()
        # The agent holds what it sent until acked: so at most the bound and one read.
        assert BOUND // 2 <= servicer.received <= BOUND + READ_SIZE
        assert not servicer.results
        pid = servicer.updates[0].pid
        assert blocked(pid)
        assert peak_rss - baseline < 16 << 20, (baseline, peak_rss)

        servicer.acking.set()
        async with asyncio.timeout(90):
            _, stderr = await proc.communicate()
        assert proc.returncode == 0, stderr
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await server.stop(None)
    (result,) = servicer.results
    assert (result.exit_code, result.error) == (0, "")
    assert result.last_sequence == len(servicer.logs)
    assert [c.sequence for c in servicer.logs] == list(range(1, len(servicer.logs) + 1))
    data = b"".join(c.data for c in servicer.logs)
    expected = lines(LINES)
    assert len(data) == len(expected)
    assert hashlib.sha256(data).digest() == hashlib.sha256(expected).digest()
