"""Scheduler and orchestrator on a real SQLite store, with worker sessions driven directly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from core_world import World, assigned, next_message, running_world

from hodei._proto.hodei.v1 import worker_pb2 as pb
from hodei.adapters.store.sqlite import SqliteJobStore
from hodei.domain.jobs import JobSpec, JobState
from hodei.errors import ConflictError, ValidationError


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with running_world(SqliteJobStore(tmp_path / "db.sqlite"), tmp_path) as world:
        yield world


def result(a: pb.AssignJob, code: int = 0, **kw: object) -> pb.JobResult:
    return pb.JobResult(job_id=a.job_id, attempt=a.attempt, exit_code=code, **kw)  # type: ignore[arg-type]


async def test_queued_job_is_dispatched_to_an_idle_worker_and_finishes(world: World) -> None:
    session = world.worker("w1")
    job = await world.orch.submit(JobSpec(command="echo hi"))
    (a,) = await assigned(session)
    assert a.job_id == job.id and a.attempt == 1 and a.command == "echo hi"
    await world.reports.on_started(session, pb.JobStatusUpdate(job_id=job.id, attempt=1))
    assert (await world.job(job.id)).state is JobState.RUNNING
    world.hub.append(job.id, 1, 1, 0, b"hi\n")
    await world.reports.on_result(session, result(a, 0, last_sequence=1))
    done = await world.job(job.id)
    assert done.state is JobState.SUCCEEDED and done.exit_code == 0 and done.finished_at
    assert world.hub.read(job.id, 1) == b"hi\n"
    assert not session.jobs and session.view.free_slots == 1


async def test_a_result_for_a_job_not_held_is_refused(world: World) -> None:
    session = world.worker("w1")
    job = await world.orch.submit(JobSpec(command="true"))
    (a,) = await assigned(session)
    stale = pb.JobResult(job_id=job.id, attempt=7, exit_code=0)
    await world.reports.on_result(session, stale)
    msg = await next_message(session)
    assert msg is not None and not msg.result_acks[0].accepted
    assert (await world.job(job.id)).state is JobState.ASSIGNED
    other = world.worker("w2")
    await world.reports.on_result(other, result(a))
    assert (await world.job(job.id)).state is JobState.ASSIGNED


async def test_reports_on_jobs_a_worker_does_not_hold_are_audited(world: World) -> None:
    session = world.worker("w1")
    job = await world.orch.submit(JobSpec(command="true"))
    (a,) = await assigned(session)
    intruder = world.worker("w2")
    await world.reports.on_result(intruder, result(a))
    world.reports.store_logs(
        intruder, [pb.LogChunk(job_id=job.id, attempt=1, sequence=1, offset=0, data=b"forged")]
    )
    for _ in range(400):
        entries, _ = await world.store.list_audit(action="worker.report_refused")
        if len(entries) == 2:
            break
        await asyncio.sleep(0.005)
    assert sorted(e.detail for e in entries) == [
        "log of attempt 1: not held by this worker",
        "result of attempt 1: not held by this worker",
    ]
    assert {(e.actor, e.target) for e in entries} == {("worker:w2", job.id)}
    assert world.hub.read(job.id, 1) == b""  # the forged log was never stored


async def test_failed_attempts_are_retried_up_to_max_retries(world: World) -> None:
    session = world.worker("w1")
    job = await world.orch.submit(JobSpec(command="false", max_retries=1))
    (a1,) = await assigned(session)
    await world.reports.on_result(session, result(a1, 1))
    (a2,) = await assigned(session)
    assert a2.attempt == 2
    await world.reports.on_result(session, result(a2, 2))
    final = await world.until(job.id, JobState.FAILED)
    assert final.attempts == 2 and final.exit_code == 2 and "exited with code 2" in final.reason


async def test_priority_first_and_labels_respected(world: World) -> None:
    low = await world.orch.submit(JobSpec(command="true", priority=1))
    high = await world.orch.submit(JobSpec(command="true", priority=9))
    gpu = await world.orch.submit(JobSpec(command="true", priority=99, labels={"gpu": "1"}))
    await asyncio.sleep(0.02)
    assert world.waiting  # nothing connected: the provisioner was asked
    session = world.worker("w1")
    (first,) = await assigned(session)
    assert first.job_id == high.id
    reason = world.scheduler.pending_reason(gpu.id)
    assert "missing labels gpu=1" in reason
    await world.reports.on_result(session, result(first))
    (second,) = await assigned(session)
    assert second.job_id == low.id


async def test_cancel_of_a_queued_job_and_of_a_running_one(world: World) -> None:
    queued = await world.orch.submit(JobSpec(command="sleep 9"))
    cancelled = await world.control.cancel(queued.id)
    assert cancelled.state is JobState.CANCELLED
    with pytest.raises(ConflictError, match="already ended"):
        await world.control.cancel(queued.id)
    session = world.worker("w1")
    job = await world.orch.submit(JobSpec(command="sleep 9"))
    (a,) = await assigned(session)
    still = await world.control.cancel(job.id)
    assert still.state is JobState.ASSIGNED
    msg = await next_message(session)
    assert msg is not None and msg.cancels[0].job_id == job.id
    await world.reports.on_result(session, result(a, 143, signal=15, cancelled=True))
    assert (await world.job(job.id)).state is JobState.CANCELLED


async def test_cancel_racing_completion_ends_in_exactly_one_state(world: World) -> None:
    session = world.worker("w1")
    job = await world.orch.submit(JobSpec(command="true"))
    (a,) = await assigned(session)
    outcomes = await asyncio.gather(
        world.control.cancel(job.id),
        world.reports.on_result(session, result(a, 0)),
        return_exceptions=True,
    )
    assert not isinstance(outcomes[1], BaseException)
    assert not isinstance(outcomes[0], BaseException) or isinstance(outcomes[0], ConflictError)
    final = await world.job(job.id)
    assert final.state is JobState.SUCCEEDED  # finished before the kill: the result wins
    with pytest.raises(ConflictError):
        await world.control.cancel(job.id)


async def test_a_lost_worker_fails_jobs_without_infra_retries_and_an_unrun_is_requeued(
    world: World,
) -> None:
    lost = await world.orch.submit(JobSpec(command="sleep 9", infra_retries=0))
    unrun = await world.orch.submit(JobSpec(command="true"))
    session = world.worker("w1", slots=2)
    batch = await assigned(session)
    if len(batch) < 2:
        batch += await assigned(session)
    by_id = {a.job_id: a for a in batch}
    await world.reports.on_result(
        session, result(by_id[unrun.id], -1, error="agent is shutting down")
    )
    again = await world.job(unrun.id)
    assert again.state in (JobState.QUEUED, JobState.ASSIGNED)
    assert "not run by its worker" in again.reason or again.state is JobState.ASSIGNED
    await world.recovery.worker_gone(session)
    gone = await world.job(lost.id)
    assert gone.state is JobState.FAILED and "lost" in gone.reason
    assert "the platform gave up after 0 automatic requeue(s)" in gone.reason


async def test_retry_only_of_finished_jobs_and_unknown_secrets_refused(world: World) -> None:
    job = await world.orch.submit(JobSpec(command="true"))
    with pytest.raises(ConflictError, match="only a finished job"):
        await world.control.retry(job.id)
    await world.control.cancel(job.id)
    again = await world.control.retry(job.id)
    assert again.state is JobState.QUEUED
    with pytest.raises(ValidationError, match="unknown secret"):
        await world.orch.submit(JobSpec(command="true", secrets=("NOPE",)))


async def test_a_retry_is_not_placed_before_its_stored_time(world: World) -> None:
    session = world.worker("w1")
    job = await world.orch.submit(JobSpec(command="true", max_retries=1))
    (a,) = await assigned(session)
    world.reports.retry_backoff_s = 0.3
    await world.reports.on_result(session, result(a, 1))
    queued = await world.until(job.id, JobState.QUEUED)
    assert queued.not_before is not None and queued.not_before > queued.created_at
    assert (await world.job(job.id)).state is JobState.QUEUED
    await asyncio.sleep(0.1)
    assert (await world.job(job.id)).state is JobState.QUEUED  # still waiting it out
    (again,) = await assigned(session)
    assert again.attempt == 2
    # What a restarted server (or another one on the store) reads honours it too.
    world.scheduler.admit(queued.with_changes(id="other", not_before=world.orch.now() + 60))
    assert "other" not in world.scheduler.queue


async def test_an_assignment_the_wire_refuses_fails_its_job_and_frees_the_slot(
    world: World,
) -> None:
    """A value that slipped past validation and that protobuf refuses must not leave the job
    queued and the worker's slot taken for good."""
    session = world.worker("w1", slots=1)
    real = session.channel.assign
    calls = {"n": 0}

    def assign(assignment: object) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise TypeError("'float' object cannot be interpreted as an integer")
        real(assignment)  # type: ignore[arg-type]

    session.channel.assign = assign  # type: ignore[method-assign]
    bad = await world.submit("echo first")
    failed = await world.until(bad.id, JobState.FAILED)
    assert "cannot dispatch" in failed.reason and "float" in failed.reason
    good = await world.submit("echo second")
    (a,) = await assigned(session)  # the slot is free again
    assert a.job_id == good.id
