"""The JobStore contract: one suite that every store adapter passes (SQLite, PostgreSQL and
the in-memory store).

PostgreSQL tests use HODEI_TEST_DATABASE_URL (see the `postgres_dsn` fixture), each in a fresh
schema; they skip loudly when no PostgreSQL is reachable and fail under HODEI_REQUIRE_SERVICES=1.
The in-memory store skips only the cases about a database behind the store (its schema, or one
that cannot be used): it has none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from store_backends import Backend, needs_a_database, reopen

from hodei.adapters.store import postgres, sqlite
from hodei.adapters.store.common import Migration
from hodei.config import ServerSettings
from hodei.domain.access import AuditEntry, Role, TokenRecord
from hodei.domain.attempts import Attempt, AttemptState, Failure
from hodei.domain.jobs import Job, JobSpec, JobState
from hodei.errors import ConflictError, NotFoundError, StoreError
from hodei.ports import JobStore
from hodei.server.wiring import make_store

Q, A, R = JobState.QUEUED, JobState.ASSIGNED, JobState.RUNNING

# A schema step both dialects understand, standing for "the next release's migration".
NEXT_STEP = Migration(
    "test: a later release's step",
    ("CREATE TABLE upgrade_probe (x INTEGER)", "ALTER TABLE jobs ADD COLUMN probe_note TEXT"),
)
BAD_STEP = Migration("test: a step that fails", ("CREATE TABLE half_done (x INTEGER)", "NOT SQL"))


def make_job(job_id: str, **spec: Any) -> Job:
    return Job(id=job_id, spec=JobSpec(command="echo hi", **spec), created_at=1000.0)


def full_job(job_id: str) -> Job:
    spec = JobSpec(
        command="run\nwith 'quotes' and \x00 and ünïcode",
        arguments=("a", "b c"),
        name="full",
        env={"A": "1", "B": "two"},
        secrets=("TOKEN", "KEY"),
        labels={"team": "infra"},
        cpu=1.5,
        memory_bytes=1 << 40,
        timeout_s=60.25,
        max_retries=3,
        priority=-7,
        queued_by="alice",
        infra_retries=4,
        no_infra_retry=True,
    )
    return Job(
        id=job_id,
        spec=spec,
        state=JobState.FAILED,
        exit_code=-9,
        attempts=3,
        worker_id="w-1",
        created_at=1.0 / 3.0,
        started_at=2.5,
        finished_at=3.75,
        reason="exit 2",
        retries_used=2,
        infra_retries_used=1,
    )


# -- CRUD


async def test_create_and_get_round_trip(store: JobStore) -> None:
    job = full_job("j1")
    created = await store.create_job(job)
    assert created.seq > 0
    assert created == job.with_changes(seq=created.seq)
    fetched = await store.get_job("j1")
    assert fetched == created
    assert isinstance(fetched.spec.arguments, tuple)
    assert isinstance(fetched.spec.secrets, tuple)
    assert isinstance(fetched.state, JobState)


async def test_create_assigns_increasing_seq(store: JobStore) -> None:
    seqs = [(await store.create_job(make_job(f"j{i}"))).seq for i in range(5)]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 5


async def test_duplicate_id_conflicts(store: JobStore) -> None:
    await store.create_job(make_job("dup"))
    with pytest.raises(ConflictError, match="job dup already exists"):
        await store.create_job(make_job("dup"))


async def test_get_missing_not_found(store: JobStore) -> None:
    with pytest.raises(NotFoundError, match="no job nope"):
        await store.get_job("nope")


async def test_concurrent_creates(store: JobStore) -> None:
    created = await asyncio.gather(*(store.create_job(make_job(f"g{i}")) for i in range(2000)))
    assert len({job.seq for job in created}) == 2000
    assert [job.id for job in created] == [f"g{i}" for i in range(2000)]
    stored = await store.jobs_in_states({Q})
    assert {job.id for job in stored} == {f"g{i}" for i in range(2000)}
    assert {job.id: job.seq for job in stored} == {job.id: job.seq for job in created}


async def test_create_many_in_one_call_refuses_only_the_conflicting_ones(store: JobStore) -> None:
    assert await store.create_jobs([]) == []
    await store.create_job(make_job("old"))
    await store.create_job(Job(id="keyed", spec=JobSpec(command="x"), idempotency_key="k1"))
    jobs = [
        make_job("m1"),
        make_job("old"),
        make_job("m2"),
        Job(id="m3", spec=JobSpec(command="x"), idempotency_key="k1"),
        make_job("m1"),
        full_job("m4"),
    ]
    results = await store.create_jobs(jobs)
    assert [type(r).__name__ for r in results] == [
        "Job", "ConflictError", "Job", "ConflictError", "ConflictError", "Job"
    ]  # fmt: skip
    assert "job old already exists" in str(results[1])
    assert "idempotency key already used by job keyed" in str(results[3])
    created = [r for r in results if isinstance(r, Job)]
    assert [j.seq for j in created] == sorted(j.seq for j in created)  # in the given order
    for job in created:
        assert job == await store.get_job(job.id)
    assert created[2] == full_job("m4").with_changes(seq=created[2].seq)
    with pytest.raises(NotFoundError):
        await store.get_job("m3")
    assert (await store.get_job("old")).seq < created[0].seq  # the first "old" is kept


async def test_conflict_among_concurrent_creates_keeps_the_others(store: JobStore) -> None:
    await store.create_job(make_job("taken"))
    ids = ["a", "taken", "b", "a", "c"]
    results = await asyncio.gather(
        *(store.create_job(make_job(i)) for i in ids), return_exceptions=True
    )
    assert [type(r) for r in results] == [Job, ConflictError, Job, ConflictError, Job]
    assert {j.id for j in await store.jobs_in_states({Q})} == {"taken", "a", "b", "c"}


# -- idempotency keys


async def test_idempotency_key_round_trips_and_finds_its_job(store: JobStore) -> None:
    created = await store.create_job(make_job("k1").with_changes(idempotency_key="deploy-42"))
    assert (await store.get_job("k1")).idempotency_key == "deploy-42"
    assert await store.job_by_idempotency_key("deploy-42") == created
    assert await store.job_by_idempotency_key("other") is None
    # Jobs without a key never collide with each other.
    await store.create_job(make_job("k2"))
    await store.create_job(make_job("k3"))
    assert (await store.get_job("k3")).idempotency_key is None


async def test_a_used_idempotency_key_conflicts_and_names_its_job(store: JobStore) -> None:
    await store.create_job(make_job("first").with_changes(idempotency_key="once"))
    with pytest.raises(ConflictError, match="idempotency key already used by job first"):
        await store.create_job(make_job("second").with_changes(idempotency_key="once"))
    with pytest.raises(ConflictError, match="job first already exists"):
        await store.create_job(make_job("first").with_changes(idempotency_key="fresh"))
    assert {j.id for j in await store.jobs_in_states({Q})} == {"first"}


async def test_concurrent_creates_with_one_key_store_exactly_one(store: JobStore) -> None:
    jobs = [make_job(f"c{i}").with_changes(idempotency_key="same") for i in range(20)]
    others = [make_job(f"o{i}").with_changes(idempotency_key=f"k{i}") for i in range(20)]
    results = await asyncio.gather(
        *(store.create_job(j) for j in jobs + others), return_exceptions=True
    )
    winners = [r for r in results[:20] if isinstance(r, Job)]
    assert len(winners) == 1
    assert all(isinstance(r, ConflictError) for r in results[:20] if r is not winners[0])
    assert all(isinstance(r, Job) for r in results[20:])
    assert await store.job_by_idempotency_key("same") == winners[0]


# -- attempts


async def test_attempts_are_recorded_with_their_transitions(store: JobStore) -> None:
    await store.create_job(make_job("a1"))
    assigned = Attempt("a1", 1, AttemptState.ASSIGNED, "w1", assigned_at=10.0)
    await store.transition("a1", {Q}, A, {"attempts": 1, "worker_id": "w1"}, assigned)
    running = Attempt("a1", 1, AttemptState.RUNNING, "w1", started_at=11.0)
    await store.transition("a1", {A}, R, {"started_at": 11.0}, running)
    failed = Attempt("a1", 1, AttemptState.FAILED, "w1", 3, None, 11.0, 12.0, "exit 3")
    await store.transition("a1", {R}, Q, {"exit_code": 3, "worker_id": None}, failed)
    await store.transition(
        "a1", {Q}, A, {"attempts": 2, "worker_id": "w2"}, Attempt("a1", 2, AttemptState.ASSIGNED)
    )
    done = Attempt("a1", 2, AttemptState.SUCCEEDED, "w2", 0, None, 20.0, 21.0, "")
    await store.transition("a1", {A}, JobState.SUCCEEDED, {"exit_code": 0}, done)
    assert await store.list_attempts("a1") == [
        Attempt("a1", 1, AttemptState.FAILED, "w1", 3, 10.0, 11.0, 12.0, "exit 3"),
        Attempt("a1", 2, AttemptState.SUCCEEDED, "w2", 0, None, 20.0, 21.0, ""),
    ]
    assert await store.list_attempts("ghost") == []


async def test_retry_counters_and_failure_kinds_are_kept(store: JobStore) -> None:
    await store.create_job(make_job("f1", infra_retries=1))
    assert (await store.get_job("f1")).spec.infra_retries == 1
    assert (
        (await store.get_job("f1")).retries_used
        == 0
        == (await store.get_job("f1")).infra_retries_used
    )
    lost = Attempt("f1", 1, AttemptState.FAILED, "w1", reason="lost", failure=Failure.WORKER_LOST)
    await store.transition("f1", {Q}, A, {"attempts": 1}, Attempt("f1", 1, AttemptState.ASSIGNED))
    moved = await store.transition("f1", {A}, Q, {"infra_retries_used": 1}, lost)
    assert (moved.retries_used, moved.infra_retries_used) == (0, 1)
    await store.transition("f1", {Q}, A, {"attempts": 2}, Attempt("f1", 2, AttemptState.ASSIGNED))
    own = Attempt("f1", 2, AttemptState.FAILED, "w2", 1, reason="exit 1", failure=Failure.JOB)
    again = await store.transition("f1", {A}, Q, {"retries_used": 1}, own)
    assert (again.retries_used, again.infra_retries_used) == (1, 1)
    assert again == await store.get_job("f1") == (await store.pending_jobs())[0]
    assert [(a.state, a.failure) for a in await store.list_attempts("f1")] == [
        (AttemptState.FAILED, Failure.WORKER_LOST),
        (AttemptState.FAILED, Failure.JOB),
    ]
    # An attempt that runs (or runs again) has no failure yet: the upsert replaces it.
    await store.transition("f1", {Q}, A, {"attempts": 3}, Attempt("f1", 3, AttemptState.ASSIGNED))
    (*_, third) = await store.list_attempts("f1")
    assert third.failure is None


async def test_what_an_attempt_used_is_kept(store: JobStore) -> None:
    await store.create_job(make_job("u1"))
    await store.transition("u1", {Q}, A, {"attempts": 1}, Attempt("u1", 1, AttemptState.ASSIGNED))
    await store.transition("u1", {A}, R, {}, Attempt("u1", 1, AttemptState.RUNNING, "w1"))
    used = Attempt(
        "u1",
        1,
        AttemptState.FAILED,
        "w1",
        1,
        finished_at=3.0,
        failure=Failure.JOB,
        cpu_seconds=1.25,
        peak_memory_bytes=3 << 33,  # past 32 bits
        read_bytes=0,
        written_bytes=1 << 40,
    )
    await store.transition("u1", {R}, Q, {"attempts": 1}, used)
    # Not measured (an older agent, a lost worker): None, and the next attempt's own values.
    await store.transition("u1", {Q}, A, {"attempts": 2}, Attempt("u1", 2, AttemptState.ASSIGNED))
    io_unknown = Attempt(
        "u1", 2, AttemptState.SUCCEEDED, "w2", 0, cpu_seconds=0.0, peak_memory_bytes=4096
    )
    await store.transition("u1", {A}, JobState.SUCCEEDED, {}, io_unknown)
    first, second = await store.list_attempts("u1")
    assert (first.cpu_seconds, first.peak_memory_bytes) == (1.25, 3 << 33)
    assert (first.read_bytes, first.written_bytes) == (0, 1 << 40)
    assert first.usage is not None and first.usage.written_bytes == 1 << 40
    assert (second.cpu_seconds, second.peak_memory_bytes) == (0.0, 4096)
    assert (second.read_bytes, second.written_bytes) == (None, None)
    # A later record without figures keeps the stored ones (like its other fields).
    await store.create_job(make_job("u2"))
    await store.transition("u2", {Q}, A, {"attempts": 1}, Attempt("u2", 1, AttemptState.ASSIGNED))
    lost = Attempt("u2", 1, AttemptState.FAILED, "w1", failure=Failure.WORKER_LOST)
    await store.transition("u2", {A}, Q, {}, lost)
    (record,) = await store.list_attempts("u2")
    assert record.usage is None and record.cpu_seconds is None


async def test_a_refused_transition_records_no_attempt(store: JobStore) -> None:
    await store.create_job(make_job("a2"))
    with pytest.raises(ConflictError):
        await store.transition("a2", {R}, Q, None, Attempt("a2", 1, AttemptState.FAILED))
    assert await store.list_attempts("a2") == []


async def test_attempts_of_many_jobs_moved_together(store: JobStore) -> None:
    ids = [f"m{i}" for i in range(200)]
    await asyncio.gather(*(store.create_job(make_job(i)) for i in ids))
    await asyncio.gather(
        *(
            store.transition(i, {Q}, A, {"attempts": 1}, Attempt(i, 1, AttemptState.ASSIGNED))
            for i in ids[::2]
        ),
        *(store.transition(i, {Q}, A, {"attempts": 1}) for i in ids[1::2]),
    )
    for n, job_id in enumerate(ids):
        expected = [Attempt(job_id, 1, AttemptState.ASSIGNED)] if n % 2 == 0 else []
        assert await store.list_attempts(job_id) == expected


# -- API tokens and the audit trail


async def test_tokens_round_trip_and_revoke_once(store: JobStore) -> None:
    viewer = TokenRecord("aaa111bbb222", "ci", Role.VIEWER, "h" * 64, 5.0)
    admin = TokenRecord("ccc333ddd444", "", Role.ADMIN, "g" * 64, 6.0)
    await store.create_token(admin)
    await store.create_token(viewer)
    with pytest.raises(ConflictError, match="token aaa111bbb222 already exists"):
        await store.create_token(viewer)
    assert await store.get_token("aaa111bbb222") == viewer
    assert await store.get_token("nope") is None
    assert await store.list_tokens() == [viewer, admin]
    revoked = await store.revoke_token("aaa111bbb222", 9.0)
    assert revoked.revoked_at == 9.0 and revoked.role is Role.VIEWER
    assert (await store.revoke_token("aaa111bbb222", 12.0)).revoked_at == 9.0
    with pytest.raises(NotFoundError, match="no token ghost"):
        await store.revoke_token("ghost", 1.0)


async def test_audit_pages_newest_first_and_filters(store: JobStore) -> None:
    actions = ["job.submit", "job.cancel", "secret.set", "job_x.odd", "job.submit"]
    for i, a in enumerate(actions):  # one after the other: the trail keeps their order
        await store.append_audit(AuditEntry(float(i), "token:t", a, f"j{i}", "d"))
    everything, _ = await store.list_audit()
    assert [e.action for e in everything] == list(reversed(actions))
    assert everything[0].seq > everything[-1].seq
    first, nxt = await store.list_audit(limit=2)
    assert len(first) == 2 and nxt == first[-1].seq
    rest, end = await store.list_audit(limit=10, cursor=nxt)
    assert first + rest == everything and end is None
    jobs, _ = await store.list_audit(action="job.")
    assert sorted(e.action for e in jobs) == ["job.cancel", "job.submit", "job.submit"]
    exact, _ = await store.list_audit(action="job.submit", target="j4")
    assert [(e.action, e.target, e.actor, e.detail) for e in exact] == [
        ("job.submit", "j4", "token:t", "d")
    ]


async def test_audit_many_entries_in_one_write_keep_their_order(store: JobStore) -> None:
    await store.append_audit()  # nothing to store: no error
    entries = [AuditEntry(5.0, "token:t", "job.submit", f"b{i}", "in a batch") for i in range(7)]
    await store.append_audit(*entries)
    stored, _ = await store.list_audit()
    assert [e.target for e in reversed(stored)] == [f"b{i}" for i in range(7)]
    assert len({e.seq for e in stored}) == 7


async def test_transition_with_the_callers_spec_returns_the_same_job(store: JobStore) -> None:
    created = await store.create_job(make_job("ts1"))
    plain = await store.transition("ts1", {Q}, A, {"worker_id": "w1", "attempts": 1})
    back = await store.transition("ts1", {A}, Q, {"worker_id": None}, spec=created.spec)
    assert back.spec == created.spec == plain.spec
    assert back == await store.get_job("ts1")


# -- compare-and-swap transitions


async def test_transition_success(store: JobStore) -> None:
    await store.create_job(make_job("t1"))
    job = await store.transition("t1", {Q}, A, {"worker_id": "w9", "attempts": 1})
    assert (job.state, job.worker_id, job.attempts) == (A, "w9", 1)
    job = await store.transition(
        "t1", [A, R], JobState.SUCCEEDED, {"exit_code": 0, "finished_at": 9, "reason": ""}
    )
    assert job == await store.get_job("t1")
    assert (job.state, job.exit_code, job.finished_at, job.worker_id) == (
        JobState.SUCCEEDED,
        0,
        9.0,
        "w9",
    )


async def test_a_retry_time_is_kept_with_the_job_and_can_be_cleared(store: JobStore) -> None:
    await store.create_job(make_job("nb"))
    await store.transition("nb", {Q}, A, {"attempts": 1})
    waiting = await store.transition("nb", {A}, Q, {"not_before": 1234.5})
    assert waiting.not_before == 1234.5 == (await store.pending_jobs())[0].not_before
    cleared = await store.transition("nb", {Q}, A, {"not_before": None, "attempts": 2})
    assert cleared.not_before is None


async def test_transition_can_clear_fields(store: JobStore) -> None:
    await store.create_job(full_job("c1"))
    job = await store.transition(
        "c1", {JobState.FAILED}, Q, {"worker_id": None, "exit_code": None, "finished_at": None}
    )
    assert (job.state, job.worker_id, job.exit_code, job.finished_at) == (Q, None, None, None)
    assert job.attempts == 3 and job == await store.get_job("c1")


async def test_transition_conflict_names_actual_state(store: JobStore) -> None:
    await store.create_job(make_job("t2"))
    with pytest.raises(ConflictError, match="job t2 is queued, not assigned or running"):
        await store.transition("t2", {R, A}, JobState.SUCCEEDED)
    with pytest.raises(ConflictError, match="job t2 is queued, not in any expected state"):
        await store.transition("t2", set(), JobState.SUCCEEDED)
    assert (await store.get_job("t2")).state == Q


async def test_transition_not_found(store: JobStore) -> None:
    with pytest.raises(NotFoundError, match="no job ghost"):
        await store.transition("ghost", {Q}, A)


@pytest.mark.parametrize("key", ["spec", "id", "seq", "state", "created_at", "bogus"])
async def test_transition_rejects_unknown_changes(store: JobStore, key: str) -> None:
    await store.create_job(make_job("t3"))
    with pytest.raises(ValueError, match=key):
        await store.transition("t3", {Q}, A, {key: 1})
    assert (await store.get_job("t3")).state == Q


async def test_concurrent_transitions_exactly_one_wins(store: JobStore) -> None:
    await store.create_job(make_job("race"))
    results = await asyncio.gather(
        *(store.transition("race", {Q}, A, {"worker_id": f"w{i}"}) for i in range(50)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, Job)]
    losers = [r for r in results if isinstance(r, ConflictError)]
    assert len(winners) == 1
    assert len(losers) == 49
    assert all("is assigned, not queued" in str(e) for e in losers)
    assert (await store.get_job("race")).worker_id == winners[0].worker_id


async def test_changes_of_one_job_made_together_apply_in_call_order(store: JobStore) -> None:
    await store.create_job(make_job("chain"))
    first, second, third = await asyncio.gather(
        store.transition("chain", {Q}, A, {"attempts": 1}),
        store.transition("chain", {A}, R, {"started_at": 5.0}),
        store.transition("chain", {R}, JobState.SUCCEEDED, {"exit_code": 0}),
    )
    assert (first.state, second.state, third.state) == (A, R, JobState.SUCCEEDED)
    assert (third.attempts, third.started_at, third.exit_code) == (1, 5.0, 0)


async def test_each_of_many_concurrent_transitions_gets_its_own_outcome(store: JobStore) -> None:
    for i in range(4):
        await store.create_job(make_job(f"x{i}"))
    await store.transition("x1", {Q}, R)
    results = await asyncio.gather(
        store.transition("x0", {Q}, A, {"worker_id": "w0"}),
        store.transition("x1", {Q}, A),
        store.transition("nope", {Q}, A),
        store.transition("x2", {Q}, JobState.CANCELLED, {"reason": "by user"}),
        store.transition("x3", set(), A),
        return_exceptions=True,
    )
    assert [type(r) for r in results] == [Job, ConflictError, NotFoundError, Job, ConflictError]
    assert "job x1 is running, not queued" in str(results[1])
    assert (await store.get_job("x2")).reason == "by user"
    assert (await store.get_job("x3")).state == Q


async def test_concurrent_transitions_of_many_jobs(store: JobStore) -> None:
    await asyncio.gather(*(store.create_job(make_job(f"m{i}")) for i in range(300)))
    moved = await asyncio.gather(
        *(store.transition(f"m{i}", {Q}, A, {"attempts": i}) for i in range(300))
    )
    assert [(j.id, j.state, j.attempts) for j in moved] == [(f"m{i}", A, i) for i in range(300)]
    assert len(await store.jobs_in_states({A})) == 300


# -- ordering and pagination


async def test_list_jobs_pagination(store: JobStore) -> None:
    for i in range(7):
        await store.create_job(make_job(f"p{i}"))
    pages: list[list[str]] = []
    cursor: int | None = None
    while True:
        items, cursor = await store.list_jobs(limit=3, cursor=cursor)
        pages.append([j.id for j in items])
        if cursor is None:
            break
    assert pages == [["p6", "p5", "p4"], ["p3", "p2", "p1"], ["p0"]]


async def test_list_jobs_exact_page_has_no_next(store: JobStore) -> None:
    for i in range(3):
        await store.create_job(make_job(f"e{i}"))
    items, cursor = await store.list_jobs(limit=3)
    assert len(items) == 3 and cursor is None
    items, cursor = await store.list_jobs(limit=0)  # clamped to 1
    assert [j.id for j in items] == ["e2"] and cursor == items[0].seq
    assert await store.list_jobs(cursor=items[-1].seq - 10**6) == ([], None)


async def test_list_jobs_state_filter(store: JobStore) -> None:
    for i in range(6):
        await store.create_job(make_job(f"s{i}"))
    for i in (1, 3, 4):
        await store.transition(f"s{i}", {Q}, A)
    items, cursor = await store.list_jobs(state=A, limit=2)
    assert [j.id for j in items] == ["s4", "s3"]
    items, cursor = await store.list_jobs(state=A, limit=2, cursor=cursor)
    assert [j.id for j in items] == ["s1"] and cursor is None
    items, _ = await store.list_jobs(state=Q)
    assert [j.id for j in items] == ["s5", "s2", "s0"]
    assert await store.list_jobs(state=JobState.FAILED) == ([], None)


async def test_pending_jobs_in_dispatch_order_priority_then_age(store: JobStore) -> None:
    specs = [("p0-old", 0), ("p5-old", 5), ("p0-new", 0), ("n3", -3), ("p5-new", 5)]
    for job_id, priority in specs:
        await store.create_job(make_job(job_id, priority=priority))
    await store.create_job(make_job("running", priority=9))
    await store.transition("running", {Q}, A, {"attempts": 1})
    order = [j.id for j in await store.pending_jobs()]
    assert order == ["p5-old", "p5-new", "p0-old", "p0-new", "n3"]
    assert [j.id for j in await store.pending_jobs(limit=2)] == ["p5-old", "p5-new"]
    assert await store.pending_jobs(limit=0) == []


async def test_jobs_in_states_oldest_first_whatever_the_priority(store: JobStore) -> None:
    for i in range(5):
        await store.create_job(make_job(f"o{i}", priority=5 - i))
    await store.transition("o1", {Q}, A)
    await store.transition("o3", {Q}, A)
    await store.transition("o3", {A}, R)
    await store.transition("o4", {Q}, JobState.CANCELLED)
    assert [j.id for j in await store.jobs_in_states({Q})] == ["o0", "o2"]
    assert [j.id for j in await store.jobs_in_states([A, R, Q])] == ["o0", "o1", "o2", "o3"]
    assert await store.jobs_in_states([]) == []


# -- secrets


async def test_secrets(store: JobStore) -> None:
    await store.put_secret("B", b"bee")
    await store.put_secret("A", b"ay")
    await store.put_secret("A", b"\x00ay2\xff")
    assert await store.get_secrets(["A", "B", "missing"]) == {"A": b"\x00ay2\xff", "B": b"bee"}
    assert await store.get_secrets([]) == {}
    records = await store.list_secrets()
    assert [r.name for r in records] == ["A", "B"]
    assert all(r.updated_at > 1e9 for r in records)  # seconds since the epoch
    await store.delete_secret("A")
    assert await store.get_secrets(["A"]) == {}
    with pytest.raises(NotFoundError, match="no secret A"):
        await store.delete_secret("A")


async def test_get_many_secrets(store: JobStore) -> None:
    names = [f"S{i}" for i in range(1200)]
    await asyncio.gather(*(store.put_secret(n, n.encode()) for n in names))
    found = await store.get_secrets(names)
    assert len(found) == 1200 and found["S1199"] == b"S1199"


# -- durability and lifecycle


async def test_restart_durability(backend: Backend) -> None:
    # In memory the records outlive close() (not the process): this checks that much.
    first = await reopen(backend)
    full = await first.create_job(full_job("full"))
    plain = await first.create_job(make_job("plain"))
    moved = await first.transition("plain", {Q}, A, {"worker_id": "w1", "attempts": 1})
    await first.put_secret("S", b"\x00cipher")
    await first.close()

    second = await reopen(backend)
    try:
        assert await second.get_job("full") == full
        assert await second.get_job("plain") == moved
        assert moved.seq == plain.seq
        assert moved.exit_code is None and moved.started_at is None
        assert await second.get_secrets(["S"]) == {"S": b"\x00cipher"}
        newer = await second.create_job(make_job("after"))
        assert newer.seq > plain.seq
    finally:
        await second.close()


async def test_lifecycle(backend: Backend) -> None:
    store = backend.make()
    with pytest.raises(StoreError, match="not open"):
        await store.get_job("x")
    await store.open()
    await store.open()  # idempotent
    await store.create_job(make_job("x"))
    await store.close()
    await store.close()  # idempotent
    for closed_call in (
        store.get_job("x"),
        store.create_job(make_job("y")),
        store.transition("x", {Q}, A),
        store.list_jobs(),
        store.put_secret("S", b"v"),
    ):
        with pytest.raises(StoreError, match="closed"):
            await closed_call
    await store.open()  # a closed store may be opened again
    assert (await store.get_job("x")).id == "x"
    with pytest.raises(NotFoundError):
        await store.get_job("y")
    await store.close()


async def test_close_finishes_operations_under_way(backend: Backend) -> None:
    store = await reopen(backend)
    await store.create_job(make_job("base"))
    pending = [asyncio.ensure_future(store.create_job(make_job(f"d{i}"))) for i in range(100)]
    pending.append(asyncio.ensure_future(store.transition("base", {Q}, A)))
    await asyncio.sleep(0)  # let every call start
    await store.close()
    assert all(p.done() and p.exception() is None for p in pending)
    again = await reopen(backend)
    try:
        assert len(await again.jobs_in_states({Q})) == 100
    finally:
        await again.close()


async def test_unusable_database_is_a_store_error(backend: Backend) -> None:
    needs_a_database(backend, "no file or server behind it that could be unusable")
    store = backend.broken()
    with pytest.raises(StoreError) as failure:
        await store.open()
    assert "s3cret-pw" not in str(failure.value)
    with pytest.raises(StoreError):
        await store.get_job("x")
    await store.close()


# -- schema versions


async def test_new_database_gets_the_latest_version(backend: Backend) -> None:
    needs_a_database(backend, "no schema: nothing is kept on disk to migrate")
    store = await reopen(backend)
    await store.close()
    assert await backend.version() == len(backend.migrations)


async def test_newer_schema_version_refused(backend: Backend) -> None:
    needs_a_database(backend, "no schema: nothing is kept on disk to migrate")
    store = await reopen(backend)
    await store.close()
    await backend.set_version(99)
    latest = len(backend.migrations)
    with pytest.raises(StoreError, match=rf"schema version 99, newer than .* \({latest}\)"):
        await store.open()
    with pytest.raises(StoreError):
        await store.get_job("x")
    await store.close()


async def test_newer_code_upgrades_an_older_database(backend: Backend) -> None:
    needs_a_database(backend, "no schema: nothing is kept on disk to migrate")
    old = await reopen(backend)
    kept = await old.create_job(full_job("kept"))
    await old.close()
    latest = len(backend.migrations)
    newer: Sequence[Migration] = (*backend.migrations, NEXT_STEP)

    upgraded = await reopen(backend, migrations=newer)
    try:
        assert await backend.version() == latest + 1
        assert await backend.has_table("upgrade_probe")
        assert await upgraded.get_job("kept") == kept
        await upgraded.create_job(make_job("after"))
    finally:
        await upgraded.close()
    again = await reopen(backend, migrations=newer)  # nothing is applied twice
    await again.close()
    with pytest.raises(StoreError, match=f"schema version {latest + 1}, newer"):
        await reopen(backend)  # the older code no longer opens it


async def test_a_version_1_database_is_upgraded_to_keys_and_attempts(backend: Backend) -> None:
    needs_a_database(backend, "no schema: nothing is kept on disk to migrate")
    first = await reopen(backend, migrations=backend.migrations[:1])
    await first.close()
    assert await backend.version() == 1 and not await backend.has_table("attempts")
    upgraded = await reopen(backend)
    try:
        assert await backend.version() == len(backend.migrations)
        await upgraded.create_job(make_job("u1").with_changes(idempotency_key="k"))
        assert (await upgraded.job_by_idempotency_key("k")) is not None
        assert await upgraded.list_attempts("u1") == []
    finally:
        await upgraded.close()


async def test_an_older_database_gets_retry_counters_and_failure_kinds(backend: Backend) -> None:
    needs_a_database(backend, "no schema: nothing is kept on disk to migrate")
    assert backend.run_sql is not None
    # The database as it was just before the step that added the counters.
    step = next(i for i, m in enumerate(backend.migrations) if m.description.startswith("retries"))
    old = await reopen(backend, migrations=backend.migrations[:step])
    await old.close()
    spec = '{"command": "x", "max_retries": 3}'  # a spec of before infra_retries
    rows = [("waits", "queued", 2), ("runs", "running", 2), ("new", "queued", 0)]
    for job_id, state, attempts in rows:
        await backend.run_sql(
            "INSERT INTO jobs (id, state, priority, created_at, attempts, reason, spec) "
            f"VALUES ('{job_id}', '{state}', 0, 1.0, {attempts}, '', '{spec}')"
        )
    await backend.run_sql(
        "INSERT INTO attempts (job_id, number, state, reason) VALUES ('waits', 1, 'failed', 'x')"
    )
    upgraded = await reopen(backend)
    try:
        # Requeues spent as the old rule counted them: the budget of a job mid-retries is kept.
        used = {
            j.id: (j.retries_used, j.infra_retries_used) for j in (await upgraded.list_jobs())[0]
        }
        assert used == {"waits": (2, 0), "runs": (1, 0), "new": (0, 0)}
        waits = await upgraded.get_job("waits")
        assert waits.spec.infra_retries is None and not waits.spec.no_infra_retry
        (record,) = await upgraded.list_attempts("waits")
        assert record.failure is None and record.state is AttemptState.FAILED
    finally:
        await upgraded.close()


async def test_attempts_recorded_before_usage_are_kept_without_it(backend: Backend) -> None:
    needs_a_database(backend, "no schema: nothing is kept on disk to migrate")
    assert backend.run_sql is not None
    # The database as it was just before the step that added what attempts used.
    step = next(i for i, m in enumerate(backend.migrations) if m.description.startswith("resou"))
    old = await reopen(backend, migrations=backend.migrations[:step])
    await old.close()
    await backend.run_sql(
        "INSERT INTO jobs (id, state, priority, created_at, attempts, reason, spec) "
        """VALUES ('old', 'succeeded', 0, 1.0, 1, '', '{"command": "x"}')"""
    )
    await backend.run_sql(
        "INSERT INTO attempts (job_id, number, state, reason, exit_code) "
        "VALUES ('old', 1, 'succeeded', '', 0)"
    )
    upgraded = await reopen(backend)
    try:
        assert await backend.version() == len(backend.migrations)
        (record,) = await upgraded.list_attempts("old")
        assert record.state is AttemptState.SUCCEEDED and record.exit_code == 0
        assert record.usage is None and record.read_bytes is None
        await upgraded.create_job(make_job("new"))
        assigned = Attempt("new", 1, AttemptState.ASSIGNED)
        await upgraded.transition("new", {Q}, A, {"attempts": 1}, assigned)
        done = Attempt("new", 1, AttemptState.SUCCEEDED, cpu_seconds=0.5, peak_memory_bytes=7)
        await upgraded.transition("new", {A}, JobState.SUCCEEDED, {}, done)
        (measured,) = await upgraded.list_attempts("new")
        assert (measured.cpu_seconds, measured.peak_memory_bytes) == (0.5, 7)
    finally:
        await upgraded.close()


async def test_failed_migration_leaves_the_old_version(backend: Backend) -> None:
    needs_a_database(backend, "no schema: nothing is kept on disk to migrate")
    await (await reopen(backend)).close()
    latest = len(backend.migrations)
    with pytest.raises(StoreError):
        await reopen(backend, migrations=(*backend.migrations, BAD_STEP))
    assert await backend.version() == latest
    assert not await backend.has_table("half_done")
    await (await reopen(backend)).close()


async def test_servers_starting_together_migrate_once(backend: Backend) -> None:
    needs_a_database(backend, "no schema: nothing is kept on disk to migrate")
    stores = [backend.make() for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        assert await backend.version() == len(backend.migrations)
        job = await stores[0].create_job(make_job("shared"))
        assert [await s.get_job("shared") for s in stores] == [job] * 4
    finally:
        await asyncio.gather(*(s.close() for s in stores))


# -- selection by URL


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("", sqlite.SqliteJobStore),
        ("sqlite:///tmp/x.db", sqlite.SqliteJobStore),
        ("postgresql://u:p@h:5432/db", postgres.PostgresJobStore),
        ("postgres://u@h/db", postgres.PostgresJobStore),
    ],
)
def test_make_store_by_url(tmp_path: Path, url: str, kind: type) -> None:
    settings = ServerSettings(home=tmp_path, database_url=url).validate()
    assert isinstance(make_store(settings), kind)
