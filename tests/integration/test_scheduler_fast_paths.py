"""The scheduler's fast paths keep the job semantics: per-shape queues (no pass walks the whole
queue), assignments sent before their `assigned` write commits, and a start reported with its
result stored in one write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from core_world import GatedTransitions, World, next_with, running_world

from hodei._proto.hodei.v1 import worker_pb2 as pb
from hodei.adapters.store.sqlite import SqliteJobStore
from hodei.domain.jobs import JobSpec, JobState
from hodei.server.api.grpc.worker_service import stream_of


class GatedStore(GatedTransitions, SqliteJobStore):
    """SQLite whose moves to ASSIGNED wait for `gate`."""


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with running_world(GatedStore(tmp_path / "db.sqlite"), tmp_path) as world:
        yield world


async def test_jobs_no_worker_can_take_do_not_hold_back_others(world: World) -> None:
    gpu = [
        await world.orch.submit(JobSpec(command="true", priority=9, labels={"gpu": "1"}))
        for _ in range(50)
    ]
    low = await world.orch.submit(JobSpec(command="true", priority=1))
    high = await world.orch.submit(JobSpec(command="true", priority=5))
    session = world.worker("w1", slots=1)
    (first,) = (await next_with(session, "assignments")).assignments
    assert first.job_id == high.id  # rank order across shapes; the gpu jobs are skipped
    assert "missing labels gpu=1" in world.scheduler.pending_reason(gpu[0].id)
    assert "missing labels gpu=1" in world.scheduler.pending_reason(gpu[-1].id)
    await world.reports.on_result(session, pb.JobResult(job_id=high.id, attempt=1))
    (second,) = (await next_with(session, "assignments")).assignments
    assert second.job_id == low.id
    gpu_worker = world.worker("g1", slots=2, gpu="1")
    got = (await next_with(gpu_worker, "assignments")).assignments
    assert [a.job_id for a in got] == [gpu[0].id, gpu[1].id]  # oldest first at equal priority


async def test_the_assignment_leaves_before_its_write_and_reports_wait_for_it(
    world: World,
) -> None:
    world.store.gate.clear()
    session = world.worker("w1")
    job = await world.orch.submit(JobSpec(command="true"))
    (a,) = (await next_with(session, "assignments")).assignments
    assert (await world.store.get_job(job.id)).state is JobState.QUEUED  # not yet written
    started = asyncio.ensure_future(
        world.reports.on_started(session, pb.JobStatusUpdate(job_id=job.id, attempt=a.attempt))
    )
    await asyncio.sleep(0.05)
    assert not started.done()  # applied only once `assigned` is stored
    world.store.gate.set()
    await started
    assert (await world.store.get_job(job.id)).state is JobState.RUNNING
    await world.reports.on_result(session, pb.JobResult(job_id=job.id, attempt=a.attempt))
    done = await world.until(job.id, JobState.SUCCEEDED)
    assert done.attempts == 1 and done.started_at is not None


async def test_a_job_cancelled_before_its_assignment_is_stored_is_taken_back(
    world: World,
) -> None:
    world.store.gate.clear()
    session = world.worker("w1")
    job = await world.orch.submit(JobSpec(command="sleep 9"))
    (a,) = (await next_with(session, "assignments")).assignments  # already sent
    cancelled = await world.control.cancel(job.id)  # still queued in the store
    assert cancelled.state is JobState.CANCELLED
    world.store.gate.set()
    msg = await next_with(session, "cancels")
    assert msg.cancels[0].job_id == job.id and msg.cancels[0].attempt == a.attempt
    assert not session.jobs and session.view.free_slots == 1
    await world.reports.on_result(
        session, pb.JobResult(job_id=job.id, attempt=a.attempt, cancelled=True, signal=15)
    )
    ack = await next_with(session, "result_acks")
    assert not ack.result_acks[0].accepted  # the attempt never existed in the store
    final = await world.store.get_job(job.id)
    assert final.state is JobState.CANCELLED and final.attempts == 0


async def test_a_start_reported_with_its_result_is_stored_in_one_write(world: World) -> None:
    session = world.worker("w1")
    job = await world.orch.submit(JobSpec(command="true"))
    (a,) = (await next_with(session, "assignments")).assignments
    await world.until(job.id, JobState.ASSIGNED)
    update = pb.JobStatusUpdate(job_id=job.id, attempt=a.attempt)
    await world.reports.on_started(session, update, with_result=True)
    await world.reports.on_result(session, pb.JobResult(job_id=job.id, attempt=a.attempt))
    done = await world.store.get_job(job.id)
    assert done.state is JobState.SUCCEEDED
    assert done.started_at is not None and done.finished_at is not None
    assert done.started_at <= done.finished_at
    assert world.store.targets == [JobState.ASSIGNED, JobState.SUCCEEDED]


async def test_a_result_ack_and_the_next_assignment_leave_in_one_message(world: World) -> None:
    session = world.worker("w1", slots=1)
    first = await world.orch.submit(JobSpec(command="true"))
    second = await world.orch.submit(JobSpec(command="true"))
    (a,) = (await next_with(session, "assignments")).assignments
    assert a.job_id == first.id
    await world.until(first.id, JobState.ASSIGNED)
    # Idle, as the stream's writer is:
    writer = asyncio.ensure_future(stream_of(session).next_message())
    await asyncio.sleep(0.01)
    assert not writer.done()
    await world.reports.on_result(session, pb.JobResult(job_id=first.id, attempt=1))
    msg = await asyncio.wait_for(writer, 2)
    assert msg is not None and [x.job_id for x in msg.result_acks] == [first.id]
    assert [x.job_id for x in msg.assignments] == [second.id]
