"""A store that cannot write (a full disk) loses no acknowledged report and strands no job:
reports are acknowledged only once stored, nothing after a refused log chunk is stored (no
gap), the stream is restarted so the agent sends everything again, and a job no worker holds
is settled by the periodic reconciliation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from core_world import HookedTransitions, World, assigned, next_message, running_world

from hodei._proto.hodei.v1 import worker_pb2 as pb
from hodei.adapters.logs.files import FileLogStore
from hodei.adapters.store.memory import MemoryJobStore
from hodei.domain.attempts import Failure
from hodei.domain.jobs import JobState
from hodei.errors import StoreError
from hodei.server.core.workers import WorkerSession


class FullStore(HookedTransitions, MemoryJobStore):
    """Refuses every state change while `full`, as SQLite does when its disk is full."""

    full = False

    async def before(self, target: JobState) -> None:
        if self.full:
            raise StoreError("database or disk is full")


class FullLogs(FileLogStore):
    full = False

    def append(self, job_id: str, attempt: int, data: bytes) -> int:
        if self.full:
            raise StoreError("cannot write log: No space left on device")
        return super().append(job_id, attempt, data)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    logs = FullLogs(tmp_path / "logs")
    async with running_world(FullStore(), tmp_path, logs=logs) as world:
        yield world


def full(world: World, on: bool) -> None:
    store = world.store
    assert isinstance(store, FullStore)
    store.full = on
    logs = world.hub._store  # the world's own log store
    assert isinstance(logs, FullLogs)
    logs.full = on


async def running(world: World, session: WorkerSession) -> pb.AssignJob:
    job = await world.submit("sleep 1")
    (a,) = await assigned(session)
    await world.until(job.id, JobState.ASSIGNED)
    await world.reports.on_started(session, pb.JobStatusUpdate(job_id=a.job_id, attempt=1))
    await world.until(job.id, JobState.RUNNING)
    return a


def chunk(a: pb.AssignJob, seq: int, offset: int, data: bytes) -> pb.LogChunk:
    return pb.LogChunk(job_id=a.job_id, attempt=a.attempt, sequence=seq, offset=offset, data=data)


async def test_a_result_the_store_refuses_is_kept_unacked_and_stored_when_it_can(
    world: World,
) -> None:
    session = world.worker("w1")
    a = await running(world, session)
    full(world, True)
    await world.reports.on_result(session, pb.JobResult(job_id=a.job_id, attempt=1))
    assert session.store_blocked and a.job_id in session.jobs  # still held: not lost
    assert (await world.job(a.job_id)).state is JobState.RUNNING
    # The stream's output carries no ack for it (the agent keeps the result).
    world.passes.kick()
    session.channel.ack_log("other", 1, 1)  # something to send, so the next message comes
    msg = await next_message(session)
    assert not msg.result_acks
    full(world, False)
    for _ in range(300):  # the stream is restarted after a wait (1 s the first time)
        if not session.store_blocked:
            break
        await asyncio.sleep(0.01)
    assert not session.store_blocked
    # The agent, reconnected, sends the result again: stored once, acked.
    await world.reports.on_result(session, pb.JobResult(job_id=a.job_id, attempt=1))
    done = await world.job(a.job_id)
    assert done.state is JobState.SUCCEEDED and done.attempts == 1
    acks = (await next_message(session)).result_acks
    assert [(x.job_id, x.accepted) for x in acks] == [(a.job_id, True)]
    assert not session.jobs and session.view.free_slots == 1


async def test_log_chunks_after_a_refused_one_are_not_stored_and_resent_in_order(
    world: World,
) -> None:
    session = world.worker("w1")
    a = await running(world, session)
    world.reports.store_logs(session, [chunk(a, 1, 0, b"one\n")])
    full(world, True)
    world.reports.store_logs(session, [chunk(a, 2, 4, b"two\n"), chunk(a, 3, 8, b"three\n")])
    full(world, False)
    world.reports.store_logs(session, [chunk(a, 4, 14, b"four\n")])  # blocked: not stored
    assert world.hub.read(a.job_id, 1) == b"one\n"  # no gap, nothing out of order
    for _ in range(300):
        if not session.store_blocked:
            break
        await asyncio.sleep(0.01)
    # After the restart the agent resends every unacked chunk, in order.
    resent = [chunk(a, 2, 4, b"two\n"), chunk(a, 3, 8, b"three\n"), chunk(a, 4, 14, b"four\n")]
    world.reports.store_logs(session, resent)
    assert world.hub.read(a.job_id, 1) == b"one\ntwo\nthree\nfour\n"
    acks = [x for x in (await next_message(session)).log_acks if x.job_id == a.job_id]
    assert acks and acks[-1].sequence == 4


async def test_the_cause_is_logged_once_not_once_per_chunk(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    session = world.worker("w1")
    a = await running(world, session)
    full(world, True)
    for seq in range(1, 40):
        world.reports.store_logs(session, [chunk(a, seq, (seq - 1) * 4096, b"x" * 4096)])
    await world.reports.on_result(session, pb.JobResult(job_id=a.job_id, attempt=1))
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "No space left on device" in errors[0].getMessage()
    assert not any("never arrived" in r.getMessage() for r in caplog.records)


async def test_an_active_job_no_worker_holds_is_settled_by_reconciliation(world: World) -> None:
    session = world.worker("w1")
    a = await running(world, session)
    world.registry.remove(session)  # its worker is gone without a word (no stream end seen)
    await world.recovery.reconcile()
    assert (await world.job(a.job_id)).state is JobState.RUNNING  # once is not enough
    await world.recovery.reconcile()
    job = await world.job(a.job_id)
    assert job.state is JobState.QUEUED and job.infra_retries_used == 1  # a platform fault
    attempts = await world.store.list_attempts(a.job_id)
    assert attempts[0].failure is Failure.WORKER_LOST


async def test_a_held_job_is_never_settled_by_reconciliation(world: World) -> None:
    session = world.worker("w1")
    a = await running(world, session)
    for _ in range(3):
        await world.recovery.reconcile()
    assert (await world.job(a.job_id)).state is JobState.RUNNING
    assert a.job_id in session.jobs
