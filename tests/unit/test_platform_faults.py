"""Platform faults are not job failures: an attempt lost to the platform (its worker or server
gone, the store failing) is queued again within the job's infra_retries without spending its
max_retries; an attempt never run spends neither; each attempt records whose fault it was."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from core_world import HookedTransitions, World, assigned, running_world

from hodei._proto.hodei.v1 import worker_pb2 as pb
from hodei.adapters.store.memory import MemoryJobStore
from hodei.domain.attempts import AttemptState, Failure
from hodei.domain.jobs import Job, JobSpec, JobState, validate_spec
from hodei.domain.work import AGENT_FAILED, NOT_RUN
from hodei.errors import StoreError, ValidationError
from hodei.server.core.workers import WorkerSession

BACKOFF_S = 0.02


class FlakyStore(HookedTransitions, MemoryJobStore):
    """Fails the next `failures` moves to ASSIGNED with a StoreError."""

    failures = 0

    async def before(self, target: JobState) -> None:
        if target is JobState.ASSIGNED and self.failures > 0:
            self.failures -= 1
            raise StoreError("disk full")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with running_world(FlakyStore(), tmp_path, retry_backoff_s=BACKOFF_S) as world:
        yield world


def flaky(world: World) -> FlakyStore:
    assert isinstance(world.store, FlakyStore)
    return world.store


async def committed(world: World, session: WorkerSession) -> pb.AssignJob:
    (a,) = await assigned(session)
    await world.until(a.job_id, JobState.ASSIGNED)
    return a


async def finish(world: World, session: WorkerSession, a: pb.AssignJob, code: int = 0) -> Job:
    result = pb.JobResult(job_id=a.job_id, attempt=a.attempt, exit_code=code)
    await world.reports.on_result(session, result)
    return await world.job(a.job_id)


async def failures(world: World, job_id: str) -> list[tuple[AttemptState, Failure | None]]:
    return [(a.state, a.failure) for a in await world.store.list_attempts(job_id)]


async def test_a_lost_worker_requeues_without_spending_max_retries(world: World) -> None:
    job = await world.submit("work")  # max_retries=0
    w1 = world.worker("w1")
    await committed(world, w1)
    await world.recovery.worker_gone(w1)
    queued = await world.job(job.id)
    assert queued.state is JobState.QUEUED
    assert (queued.retries_used, queued.infra_retries_used) == (0, 1)
    w2 = world.worker("w2")
    a2 = await committed(world, w2)
    assert a2.attempt == 2
    done = await finish(world, w2, a2)
    assert done.state is JobState.SUCCEEDED and done.worker_id == "w2"
    assert await failures(world, job.id) == [
        (AttemptState.FAILED, Failure.WORKER_LOST),
        (AttemptState.SUCCEEDED, None),
    ]


async def test_after_infra_retries_losses_the_platform_gives_up(world: World) -> None:
    job = await world.submit("work", infra_retries=2, max_retries=5)
    for n in (1, 2, 3):
        session = world.worker(f"w{n}")
        await committed(world, session)
        await world.recovery.worker_gone(session)
    final = await world.job(job.id)
    assert final.state is JobState.FAILED
    assert "the platform gave up after 2 automatic requeue(s)" in final.reason
    assert (final.retries_used, final.infra_retries_used) == (0, 2)  # max_retries not spent
    assert await failures(world, job.id) == [(AttemptState.FAILED, Failure.WORKER_LOST)] * 3


async def test_no_infra_retry_fails_at_the_first_loss(world: World) -> None:
    job = await world.submit("charge the card", no_infra_retry=True, max_retries=3)
    session = world.worker("w1")
    await committed(world, session)
    await world.recovery.worker_gone(session)
    final = await world.job(job.id)
    assert final.state is JobState.FAILED and "no_infra_retry" in final.reason
    assert final.attempts == 1
    assert await failures(world, job.id) == [(AttemptState.FAILED, Failure.WORKER_LOST)]


async def test_an_attempt_never_run_spends_neither_bound(world: World) -> None:
    job = await world.submit("flaky", max_retries=1, infra_retries=0)
    w1 = world.worker("w1")
    a1 = await committed(world, w1)
    unrun = pb.JobResult(job_id=job.id, attempt=a1.attempt, exit_code=NOT_RUN, error="stopping")
    await world.reports.on_result(w1, unrun)
    again = await world.job(job.id)
    assert again.state in (JobState.QUEUED, JobState.ASSIGNED)
    assert (again.retries_used, again.infra_retries_used) == (0, 0)
    w2 = world.worker("w2")  # w1 refused a job unasked (it is stopping): it gets no more
    a2 = await committed(world, w2)
    retried = await finish(world, w2, a2, code=1)  # the first real run: one retry left
    assert retried.state is JobState.QUEUED and retried.retries_used == 1
    a3 = await committed(world, w2)
    final = await finish(world, w2, a3, code=1)  # the second real run: none left
    assert final.state is JobState.FAILED and final.attempts == 3
    assert await failures(world, job.id) == [
        (AttemptState.NOT_RUN, Failure.NOT_RUN),
        (AttemptState.FAILED, Failure.JOB),
        (AttemptState.FAILED, Failure.JOB),
    ]


async def test_an_agent_that_fails_running_a_job_is_a_bounded_platform_fault(world: World) -> None:
    """An agent that breaks while running an attempt (say it finds no writable temp dir in the
    job's image) reports AGENT_FAILED: queued again within infra_retries, then failed with the
    agent's reason; once it was NOT_RUN, queued again for ever (428 attempts in a minute)."""
    job = await world.submit("true", max_retries=3, infra_retries=1)
    w1 = world.worker("w1")
    broken = "agent error: FileNotFoundError(2, 'No usable temporary directory found')"
    for number in (1, 2):
        a = await committed(world, w1)
        assert a.attempt == number
        report = pb.JobResult(
            job_id=job.id, attempt=a.attempt, exit_code=AGENT_FAILED, error=broken
        )
        await world.reports.on_result(w1, report)
    final = await world.until(job.id, JobState.FAILED)
    assert final.attempts == 2 and final.retries_used == 0 and final.infra_retries_used == 1
    assert "failed to run it" in final.reason and "No usable temporary directory" in final.reason
    assert await failures(world, job.id) == [
        (AttemptState.FAILED, Failure.AGENT),
        (AttemptState.FAILED, Failure.AGENT),
    ]


async def test_a_jobs_own_failure_spends_max_retries_only(world: World) -> None:
    job = await world.submit("false", max_retries=1)
    session = world.worker("w1")
    a1 = await committed(world, session)
    queued = await finish(world, session, a1, code=3)
    assert queued.state is JobState.QUEUED and queued.not_before is not None  # with backoff
    assert (queued.retries_used, queued.infra_retries_used) == (1, 0)
    assert queued.reason == f"attempt 1 exited with code 3; retrying in {BACKOFF_S:g}s"
    a2 = await committed(world, session)
    final = await finish(world, session, a2, code=3)
    assert final.state is JobState.FAILED and final.reason == "exited with code 3"
    assert await failures(world, job.id) == [(AttemptState.FAILED, Failure.JOB)] * 2


async def test_a_job_running_again_does_not_show_the_lost_attempts_reason(world: World) -> None:
    job = await world.submit("work")
    w1 = world.worker("w1")
    await committed(world, w1)
    await world.recovery.worker_gone(w1)
    assert "worker w1 lost" in (await world.job(job.id)).reason
    w2 = world.worker("w2")
    a2 = await committed(world, w2)
    assert (await world.job(job.id)).reason == ""
    await world.reports.on_started(w2, pb.JobStatusUpdate(job_id=job.id, attempt=a2.attempt))
    running = await world.until(job.id, JobState.RUNNING)
    assert running.reason == ""
    first = (await world.store.list_attempts(job.id))[0]
    assert "worker w1 lost" in first.reason  # the lost attempt keeps it


async def test_a_server_restart_requeues_with_its_kind(world: World) -> None:
    job = await world.submit("work")
    session = world.worker("w1")
    await committed(world, session)
    world.registry.remove(session)  # as after a restart: no session holds it
    await world.reports.settle_lost(
        await world.job(job.id), "its worker did not come back", Failure.SERVER_RESTART
    )
    queued = await world.job(job.id)
    assert queued.state is JobState.QUEUED and queued.infra_retries_used == 1
    assert await failures(world, job.id) == [(AttemptState.FAILED, Failure.SERVER_RESTART)]


async def test_an_agent_stopping_the_job_on_its_own_is_a_platform_fault(world: World) -> None:
    job = await world.submit("work")
    session = world.worker("w1")
    a1 = await committed(world, session)
    stopped = pb.JobResult(job_id=job.id, attempt=a1.attempt, exit_code=143, cancelled=True)
    await world.reports.on_result(session, stopped)
    again = await world.job(job.id)
    assert again.state in (JobState.QUEUED, JobState.ASSIGNED) and again.infra_retries_used == 1
    assert (await failures(world, job.id))[0] == (AttemptState.FAILED, Failure.WORKER_LOST)


async def test_a_store_failure_at_dispatch_requeues_then_runs(world: World) -> None:
    flaky(world).failures = 1
    job = await world.submit("work")
    session = world.worker("w1")
    a2 = await committed(world, session)  # the first was taken back before it left
    assert a2.attempt == 2
    done = await finish(world, session, a2)
    assert done.state is JobState.SUCCEEDED and done.infra_retries_used == 1
    assert await failures(world, job.id) == [
        (AttemptState.FAILED, Failure.STORE),
        (AttemptState.SUCCEEDED, None),
    ]


async def test_a_store_failure_of_a_job_marked_no_infra_retry_fails_it(world: World) -> None:
    flaky(world).failures = 1
    job = await world.submit("work", no_infra_retry=True)
    world.worker("w1")
    final = await world.until(job.id, JobState.FAILED)
    assert "could not be dispatched: disk full" in final.reason


async def test_the_server_default_is_recorded_at_submit(world: World) -> None:
    assert (await world.submit("a")).spec.infra_retries == world.orch.infra_retries == 2
    assert (await world.submit("b", infra_retries=0)).spec.infra_retries == 0
    with pytest.raises(ValidationError, match="infra retries"):
        validate_spec(JobSpec(command="x", infra_retries=101))
