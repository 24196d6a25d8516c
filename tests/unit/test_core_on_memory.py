"""The server core (orchestrator, dispatcher, reports) on the in-memory store: the World helper
wired as the composition root wires it, worker sessions driven directly, no thread, no network.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from core_world import GatedTransitions, World, assigned, next_message, next_with, running_world

from hodei._proto.hodei.v1 import worker_pb2 as pb
from hodei.adapters.store.memory import MemoryJobStore
from hodei.domain.access import AuditEntry
from hodei.domain.attempts import AttemptState, Failure
from hodei.domain.jobs import JobSpec, JobState
from hodei.domain.work import NOT_RUN
from hodei.errors import ConflictError, ValidationError
from hodei.server.api.grpc.worker_service import stream_of
from hodei.server.core.bus import JobChanged
from hodei.server.core.workers import WorkerSession

BACKOFF_S = 0.05  # retries wait this long (doubling): short, so the tests stay fast


class GatedMemoryStore(GatedTransitions, MemoryJobStore):
    """The in-memory store whose moves to ASSIGNED wait for `gate`."""


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with running_world(MemoryJobStore(), tmp_path, retry_backoff_s=BACKOFF_S) as world:
        yield world


@pytest.fixture
async def gated(tmp_path: Path) -> AsyncIterator[World]:
    """Assignments leave before their write commits (one server)."""
    async with running_world(GatedMemoryStore(), tmp_path, BACKOFF_S) as world:
        yield world


@pytest.fixture
async def stored_first(tmp_path: Path) -> AsyncIterator[World]:
    """Assignments leave once their write has committed (several servers on one store)."""
    store = GatedMemoryStore()
    async with running_world(store, tmp_path, BACKOFF_S, send_before_commit=False) as world:
        yield world


@pytest.fixture(params=["gated", "stored_first"])
def either(request: pytest.FixtureRequest) -> World:
    world: World = request.getfixturevalue(request.param)
    return world


def gate_of(world: World) -> GatedMemoryStore:
    assert isinstance(world.store, GatedMemoryStore)
    return world.store


def changes_of(world: World) -> list[JobChanged]:
    """Every JobChanged published from now on."""
    seen: list[JobChanged] = []
    world.bus.subscribe(JobChanged, seen.append)
    return seen


def result(a: pb.AssignJob, code: int = 0, **kw: Any) -> pb.JobResult:
    return pb.JobResult(job_id=a.job_id, attempt=a.attempt, exit_code=code, **kw)


def chunk(job_id: str, attempt: int, seq: int, offset: int, data: bytes) -> pb.LogChunk:
    return pb.LogChunk(job_id=job_id, attempt=attempt, sequence=seq, offset=offset, data=data)


async def audit(world: World, action: str, count: int) -> list[AuditEntry]:
    """The audit entries of `action` once there are `count` (they are written off the path)."""
    entries: list[AuditEntry] = []
    for _ in range(400):
        entries, _ = await world.store.list_audit(action=action)
        if len(entries) >= count:
            return entries
        await asyncio.sleep(0.005)
    raise AssertionError(f"{len(entries)} {action} audit entries, not {count}")


async def slot_freed(session: WorkerSession) -> None:
    for _ in range(400):
        if not session.jobs and session.view.free_slots == session.view.slots:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"worker {session.id} still holds {sorted(session.jobs)}")


async def committed(world: World, session: WorkerSession) -> pb.AssignJob:
    """The next assignment of `session`, once its `assigned` write has committed."""
    a: pb.AssignJob
    (a,) = await assigned(session)
    await world.until(a.job_id, JobState.ASSIGNED)
    return a


# ---- orchestrator --------------------------------------------------------------------------


async def test_submit_stores_the_job_and_publishes_its_creation(world: World) -> None:
    seen = changes_of(world)
    job = await world.submit("echo hi", name="greet")
    stored = await world.job(job.id)
    assert stored == job and stored.state is JobState.QUEUED and stored.seq > 0
    assert stored.spec.command == "echo hi" and stored.spec.name == "greet"
    assert [(e.job, e.previous, e.remote) for e in seen] == [(stored, None, False)]


async def test_a_move_from_a_stale_copy_is_refused_and_changes_nothing(world: World) -> None:
    stale = await world.submit("sleep 9")
    await world.control.cancel(stale.id)  # moved on meanwhile
    before = await world.job(stale.id)
    seen = changes_of(world)
    with pytest.raises(ConflictError, match=f"job {stale.id} is cancelled, not queued"):
        await world.orch.move(stale, JobState.ASSIGNED, worker_id="w1", attempts=1)
    after = await world.job(stale.id)
    assert after == before and after.state is JobState.CANCELLED
    assert after.worker_id is None and after.attempts == 0
    assert await world.store.list_attempts(stale.id) == []
    assert seen == []


async def test_an_illegal_transition_is_refused_before_the_store(world: World) -> None:
    job = await world.submit()
    seen = changes_of(world)
    with pytest.raises(ConflictError, match="illegal transition queued -> succeeded"):
        await world.orch.finish(job, JobState.SUCCEEDED, 0, "")
    assert (await world.job(job.id)) == job
    cancelled = await world.orch.finish(job, JobState.CANCELLED, None, "by test")
    with pytest.raises(ConflictError, match="illegal transition cancelled -> running"):
        await world.orch.move(cancelled, JobState.RUNNING, started_at=1.0)
    assert (await world.job(job.id)) == cancelled
    assert [e.job.state for e in seen] == [JobState.CANCELLED]


async def test_an_idempotency_key_names_one_submission(world: World) -> None:
    seen = changes_of(world)
    spec = JobSpec(command="make", env={"MODE": "release"}, queued_by="alice")
    first, created = await world.orch.submit_once(spec, idempotency_key="build-42")
    assert created and first.idempotency_key == "build-42"
    again, created = await world.orch.submit_once(
        JobSpec(command="make", env={"MODE": "release"}, queued_by="bob"),  # who asks: not part
        idempotency_key="build-42",
    )
    assert not created and again == first
    with pytest.raises(ConflictError, match=f"already used by job {first.id} for a different"):
        await world.orch.submit_once(JobSpec(command="make clean"), idempotency_key="build-42")
    with pytest.raises(ConflictError, match="different submission"):
        await world.orch.submit_once(spec, job_id="another-id", idempotency_key="build-42")
    jobs, _ = await world.store.list_jobs()
    assert [j.id for j in jobs] == [first.id]
    assert [e.job.id for e in seen] == [first.id]


async def test_a_batch_with_one_invalid_spec_is_refused_whole(world: World) -> None:
    seen = changes_of(world)
    batch: list[tuple[JobSpec, str | None]] = [
        (JobSpec(command="true"), None),
        (JobSpec(command="true"), "batch-key"),
        (JobSpec(command="   "), None),
    ]
    with pytest.raises(ValidationError, match=r"^jobs\[2\]: command must not be empty$"):
        await world.orch.submit_many(batch)
    batch[2] = (JobSpec(command="true", max_retries=101), None)
    with pytest.raises(ValidationError, match=r"^jobs\[2\]: retries must be between"):
        await world.orch.submit_many(batch)
    assert (await world.store.list_jobs())[0] == []
    assert await world.store.job_by_idempotency_key("batch-key") is None
    assert seen == []


async def test_a_batch_reuses_a_known_key_and_fails_a_misused_one_alone(world: World) -> None:
    known, _ = await world.orch.submit_once(JobSpec(command="a"), idempotency_key="ka")
    answer = await world.orch.submit_many(
        [(JobSpec(command="a"), "ka"), (JobSpec(command="b"), "ka"), (JobSpec(command="c"), "kc")]
    )
    assert answer[0] == (known, False)
    assert isinstance(answer[1], ConflictError) and "different submission" in answer[1].message
    new = answer[2]
    assert isinstance(new, tuple) and new[1] and new[0].spec.command == "c"
    assert await world.store.job_by_idempotency_key("kc") == await world.job(new[0].id)


async def test_attempt_records_follow_assign_run_and_finish(world: World) -> None:
    session = world.worker("w1")
    job = await world.submit("false")
    a = await committed(world, session)
    (record,) = await world.store.list_attempts(job.id)
    assert (record.number, record.state, record.worker_id) == (1, AttemptState.ASSIGNED, "w1")
    assert record.assigned_at is not None and record.finished_at is None
    await world.reports.on_started(session, pb.JobStatusUpdate(job_id=job.id, attempt=1))
    (record,) = await world.store.list_attempts(job.id)
    assert record.state is AttemptState.RUNNING and record.started_at is not None
    assert record.assigned_at is not None  # kept from the assigned record
    await world.reports.on_result(session, result(a, 7))
    (record,) = await world.store.list_attempts(job.id)
    assert (record.state, record.worker_id, record.exit_code) == (AttemptState.FAILED, "w1", 7)
    assert record.finished_at is not None and record.reason == "exited with code 7"
    assert record.assigned_at is not None and record.started_at is not None
    final = await world.job(job.id)
    assert final.state is JobState.FAILED and final.exit_code == 7


# ---- dispatcher ----------------------------------------------------------------------------


async def test_a_job_gets_its_secrets_values_and_their_use_is_audited(world: World) -> None:
    await world.vault.put("API_TOKEN", "s3cr3t-value")
    await world.vault.put("OTHER", "not-for-this-job")
    job = await world.submit("deploy", secrets=("API_TOKEN",))
    session = world.worker("w1")
    (a,) = await assigned(session)
    assert a.job_id == job.id and dict(a.secrets) == {"API_TOKEN": "s3cr3t-value"}
    assert "API_TOKEN" not in a.environment  # a value travels as a secret only
    (entry,) = await audit(world, "secret.use", 1)
    assert (entry.actor, entry.target) == ("worker:w1", "API_TOKEN")
    assert entry.detail == f"job {job.id} attempt 1"
    assert "s3cr3t" not in entry.detail + entry.target + entry.actor


async def test_a_secret_deleted_after_submit_fails_the_job_and_frees_the_slot(
    world: World,
) -> None:
    await world.vault.put("API_TOKEN", "s3cr3t-value")
    job = await world.submit("deploy", secrets=("API_TOKEN",), max_retries=3)
    await world.vault.delete("API_TOKEN")
    session = world.worker("w1")
    failed = await world.until(job.id, JobState.FAILED)
    assert failed.reason.startswith("cannot dispatch")
    assert "unknown secret(s): API_TOKEN" in failed.reason
    assert failed.attempts == 0 and failed.worker_id is None  # never handed out
    await slot_freed(session)
    other = await world.submit()
    (a,) = await assigned(session)  # the freed slot takes the next job
    assert a.job_id == other.id
    entries, _ = await world.store.list_audit(action="secret.use")
    assert entries == []


async def test_stored_before_sent_the_assignment_leaves_after_its_write(
    stored_first: World,
) -> None:
    gated = stored_first
    store = gate_of(gated)
    store.gate.clear()
    session = gated.worker("w1")
    job = await gated.submit()
    await asyncio.wait_for(store.holding.wait(), 2)
    writer = asyncio.ensure_future(stream_of(session).next_message())
    await asyncio.sleep(0.05)
    assert not writer.done()  # nothing leaves while the write is held
    assert (await gated.job(job.id)).state is JobState.QUEUED
    store.gate.set()
    msg = await asyncio.wait_for(writer, 2)
    assert msg is not None and [(x.job_id, x.attempt) for x in msg.assignments] == [(job.id, 1)]
    stored = await gated.job(job.id)
    assert stored.state is JobState.ASSIGNED and stored.worker_id == "w1"


async def test_a_job_cancelled_while_its_assignment_is_written_is_taken_back(
    either: World,
) -> None:
    gated = either
    store = gate_of(gated)
    store.gate.clear()
    session = gated.worker("w1")
    job = await gated.submit("sleep 9")
    await asyncio.wait_for(store.holding.wait(), 2)
    assert job.id in session.jobs and session.view.free_slots == 0
    cancelled = await gated.control.cancel(job.id)  # still queued in the store
    assert cancelled.state is JobState.CANCELLED
    store.gate.set()
    await slot_freed(session)
    final = await gated.job(job.id)
    assert final.state is JobState.CANCELLED and final.attempts == 0
    assert await gated.store.list_attempts(job.id) == []
    nxt = await gated.submit()
    while True:  # what leaves up to the next assignment: never the cancelled job, no cancel
        msg = await next_message(session)
        assert not msg.cancels
        if msg.assignments:
            break
    assert [x.job_id for x in msg.assignments] == [nxt.id]


# ---- reports -------------------------------------------------------------------------------


async def test_exit_zero_succeeds_and_acks_the_result(world: World) -> None:
    session = world.worker("w1")
    job = await world.submit()
    a = await committed(world, session)
    await world.reports.on_result(session, result(a, 0))
    done = await world.job(job.id)
    assert done.state is JobState.SUCCEEDED and done.exit_code == 0 and done.reason == ""
    assert done.finished_at is not None
    ack = (await next_with(session, "result_acks")).result_acks
    assert [(x.job_id, x.attempt, x.accepted) for x in ack] == [(job.id, 1, True)]
    assert not session.jobs and session.view.free_slots == 1


async def test_what_an_attempt_used_is_recorded_with_its_end(world: World) -> None:
    session = world.worker("w1")
    job = await world.submit("false", max_retries=1)
    a1 = await committed(world, session)
    measured = result(
        a1, 3, has_usage=True, cpu_seconds=0.75, peak_memory_bytes=5 << 20, has_io=False
    )
    await world.reports.on_result(session, measured)  # failed, queued again: still recorded
    a2 = await committed(world, session)
    io = {"has_io": True, "read_bytes": 10, "written_bytes": 20}
    await world.reports.on_result(
        session, result(a2, 0, has_usage=True, cpu_seconds=2.5, peak_memory_bytes=1 << 30, **io)
    )
    await world.until(job.id, JobState.SUCCEEDED)
    first, second = await world.store.list_attempts(job.id)
    assert (first.cpu_seconds, first.peak_memory_bytes) == (0.75, 5 << 20)
    assert (first.read_bytes, first.written_bytes) == (None, None)  # not readable there
    assert (second.cpu_seconds, second.peak_memory_bytes) == (2.5, 1 << 30)
    assert (second.read_bytes, second.written_bytes) == (10, 20)


async def test_a_result_without_usage_records_none(world: World) -> None:
    session = world.worker("w1")
    job = await world.submit()
    a = await committed(world, session)
    await world.reports.on_result(session, result(a, 0, cpu_seconds=9.0))  # has_usage unset
    await world.until(job.id, JobState.SUCCEEDED)
    (record,) = await world.store.list_attempts(job.id)
    assert record.usage is None and record.cpu_seconds is None


async def test_a_failure_with_retries_left_is_queued_again_after_a_backoff(world: World) -> None:
    session = world.worker("w1")
    job = await world.submit("false", max_retries=1)
    a1 = await committed(world, session)
    before = time.time()
    await world.reports.on_result(session, result(a1, 3))
    queued = await world.job(job.id)
    assert queued.state is JobState.QUEUED and queued.worker_id is None
    assert queued.not_before is not None and queued.not_before >= before + BACKOFF_S
    assert queued.reason == f"attempt 1 exited with code 3; retrying in {BACKOFF_S:g}s"
    assert queued.exit_code == 3 and queued.attempts == 1
    ack = (await next_with(session, "result_acks")).result_acks
    assert [(x.job_id, x.accepted) for x in ack] == [(job.id, True)]
    a2 = await committed(world, session)
    assert (a2.job_id, a2.attempt) == (job.id, 2)
    assert time.time() >= queued.not_before  # not placed before its time
    await world.reports.on_result(session, result(a2, 3))
    final = await world.job(job.id)
    assert final.state is JobState.FAILED and final.attempts == 2
    assert final.exit_code == 3 and final.reason == "exited with code 3"
    assert [(r.number, r.state, r.exit_code) for r in await world.store.list_attempts(job.id)] == [
        (1, AttemptState.FAILED, 3),
        (2, AttemptState.FAILED, 3),
    ]


async def test_an_attempt_not_run_is_queued_again_without_spending_a_retry(
    world: World,
) -> None:
    session = world.worker("w1")
    job = await world.submit("true", max_retries=0)
    a1 = await committed(world, session)
    await world.reports.on_result(session, result(a1, NOT_RUN, error="agent is shutting down"))
    ack = (await next_with(session, "result_acks")).result_acks
    assert [(x.job_id, x.accepted) for x in ack] == [(job.id, True)]
    # A worker that refused a job unasked is shutting down: it is given nothing more.
    assert not session.view.accepting
    other = world.worker("w2")
    a2 = await committed(world, other)  # queued again at once (no backoff), not failed
    assert (a2.job_id, a2.attempt) == (job.id, 2)
    first, second = await world.store.list_attempts(job.id)
    assert (first.number, first.state, first.worker_id) == (1, AttemptState.NOT_RUN, "w1")
    assert first.reason == "not run by its worker: agent is shutting down"
    assert first.exit_code is None
    assert (second.number, second.state) == (2, AttemptState.ASSIGNED)
    await world.reports.on_result(other, result(a2, 0))
    assert (await world.job(job.id)).state is JobState.SUCCEEDED


async def test_log_chunks_of_a_held_attempt_are_stored_once_and_acked(world: World) -> None:
    session = world.worker("w1")
    job = await world.submit("echo")
    await committed(world, session)
    chunks = [chunk(job.id, 1, 1, 0, b"one\n"), chunk(job.id, 1, 2, 4, b"two\n")]
    world.reports.store_logs(session, chunks)
    assert world.hub.read(job.id, 1) == b"one\ntwo\n"
    acks = (await next_with(session, "log_acks")).log_acks
    assert [(x.job_id, x.attempt, x.sequence) for x in acks] == [(job.id, 1, 2)]
    world.reports.store_logs(session, chunks)  # resent (a reconnect): not stored twice
    assert world.hub.read(job.id, 1) == b"one\ntwo\n"
    acks = (await next_with(session, "log_acks")).log_acks
    assert [(x.job_id, x.attempt, x.sequence) for x in acks] == [(job.id, 1, 2)]
    world.reports.store_logs(session, [chunk(job.id, 1, 3, 4, b"two\nthree\n")])
    assert world.hub.read(job.id, 1) == b"one\ntwo\nthree\n"  # only the new bytes


async def test_log_chunks_before_the_assigned_write_wait_for_it(gated: World) -> None:
    store = gate_of(gated)
    store.gate.clear()
    session = gated.worker("w1")
    job = await gated.submit("echo")
    (a,) = await assigned(session)  # left before its write
    gated.reports.store_logs(session, [chunk(job.id, a.attempt, 1, 0, b"early\n")])
    assert gated.hub.read(job.id, 1) == b""  # not stored for an attempt not yet recorded
    store.gate.set()
    await gated.until(job.id, JobState.ASSIGNED)
    acks = (await next_with(session, "log_acks")).log_acks
    assert [(x.job_id, x.sequence) for x in acks] == [(job.id, 1)]
    assert gated.hub.read(job.id, 1) == b"early\n"


async def test_log_chunks_of_attempts_not_held_are_refused_and_audited(world: World) -> None:
    session = world.worker("w1")
    job = await world.submit("echo")
    await committed(world, session)
    elsewhere = await world.submit("echo", labels={"gpu": "1"})  # no worker takes it
    world.reports.store_logs(
        session,
        [
            chunk(elsewhere.id, 1, 1, 0, b"forged\n"),
            chunk(job.id, 2, 1, 0, b"stale attempt\n"),
            chunk(job.id, 1, 1, 0, b"mine\n"),
        ],
    )
    assert world.hub.read(elsewhere.id, 1) == b"" and world.hub.read(job.id, 2) == b""
    assert world.hub.read(job.id, 1) == b"mine\n"
    acks = (await next_with(session, "log_acks")).log_acks
    assert [(x.job_id, x.attempt) for x in acks] == [(job.id, 1)]
    entries = await audit(world, "worker.report_refused", 2)
    assert sorted((e.actor, e.target, e.detail) for e in entries) == sorted(
        [
            ("worker:w1", elsewhere.id, "log of attempt 1: not held by this worker"),
            ("worker:w1", job.id, "log of attempt 2: not held by this worker"),
        ]
    )


async def test_a_lost_worker_fails_its_job_marked_no_infra_retry(world: World) -> None:
    session = world.worker("w1")
    job = await world.submit("sleep 9", no_infra_retry=True)
    await committed(world, session)
    await world.recovery.worker_gone(session)
    final = await world.job(job.id)
    assert final.state is JobState.FAILED
    assert final.reason == "worker w1 lost; not run again: the job is marked no_infra_retry"
    assert final.exit_code is None and final.finished_at is not None
    (record,) = await world.store.list_attempts(job.id)
    assert (record.state, record.worker_id) == (AttemptState.FAILED, "w1")
    assert record.failure is Failure.WORKER_LOST
    assert world.registry.get("w1") is None and not session.jobs


async def test_a_lost_worker_s_job_is_queued_again_without_spending_retries(
    world: World,
) -> None:
    session = world.worker("w1")
    job = await world.submit("sleep 9", max_retries=1)
    await committed(world, session)
    await world.recovery.worker_gone(session)
    queued = await world.job(job.id)
    assert queued.state is JobState.QUEUED and queued.worker_id is None
    assert queued.reason == "attempt 1 worker w1 lost; queued again (platform fault 1 of 2)"
    assert queued.not_before is None  # no backoff: the job did nothing wrong
    assert (queued.retries_used, queued.infra_retries_used) == (0, 1)
    other = world.worker("w2")
    a2 = await committed(world, other)
    assert (a2.job_id, a2.attempt) == (job.id, 2)
    assert (await world.job(job.id)).worker_id == "w2"


async def test_a_lost_worker_s_job_being_cancelled_ends_cancelled(world: World) -> None:
    session = world.worker("w1")
    job = await world.submit("sleep 9", max_retries=5)
    await committed(world, session)
    still = await world.control.cancel(job.id)
    assert still.state is JobState.ASSIGNED  # asked to stop on its worker
    await world.recovery.worker_gone(session)
    final = await world.job(job.id)
    assert final.state is JobState.CANCELLED and final.reason == "cancelled (worker gone)"
