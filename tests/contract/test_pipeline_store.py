"""The PipelineStore contract: one suite that every store adapter passes (SQLite, PostgreSQL and
the in-memory store), as tests/contract/test_job_store.py does for jobs.

PostgreSQL tests use HODEI_TEST_DATABASE_URL (the `postgres_dsn` fixture), each in a fresh
schema. The in-memory store skips only the cases about a database behind it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from store_backends import Backend, needs_a_database, postgres_backend, reopen, sqlite_backend

from hodei.domain.jobs import Job, JobSpec
from hodei.domain.pipelines.model import JobStatus
from hodei.domain.pipelines.runs import PipelineRun, RunState, RunStep, StepUpdate
from hodei.errors import ConflictError, NotFoundError, StoreError
from hodei.ports import JobStore

PENDING, RUNNING, SUCCEEDED = JobStatus.PENDING, JobStatus.RUNNING, JobStatus.SUCCEEDED


def make_run(run_id: str, **changes: Any) -> PipelineRun:
    run = PipelineRun(id=run_id, name="p", source="steps: []\n", created_at=10.0)
    return run.with_changes(**changes)


def make_steps(run_id: str, count: int, **changes: Any) -> list[RunStep]:
    return [RunStep(run_id, f"s{i}", i, f"s{i}", **changes) for i in range(count)]


def full_run(run_id: str) -> PipelineRun:
    return PipelineRun(
        id=run_id,
        name="build-ünïcode ✓",
        source="name: x\nsteps:\n  - name: 'quoted' \"both\"\n    run: echo ☃\n",
        filename="ci/pipeline.yaml",
        params={"target": "prod", "empty": "", "ключ": "значение", "nul": "a\x00b"},
        state=RunState.WAITING,
        approved=("deploy", "test[os=linux]"),
        no_cache=True,
        queued_by="alice",
        created_at=1.0 / 3.0,
        finished_at=2.5,
        reason="waiting for deploy ✋",
        cancelled_by="bob ✗",
        generation=2,
        version=5,
    )


def full_step(run_id: str, index: int = 0) -> RunStep:
    return RunStep(
        run_id=run_id,
        step_id=f"test[os=linux,python=3.12]#{index}",
        index=index,
        step="test",
        status=SUCCEEDED,
        generation=2,
        job_id=f"{run_id}.{index}.2",
        attempt=3,
        reason="cached from j1 ✓",
        outputs={"version": "1.2.3", "multi": "line\nline", "nul": "\x00", "ü": "☃"},
        cache_key="sha256:abc",
        cached_from="j1",
        artifact_sha256="f" * 64,
        artifact_bytes=5 << 32,  # beyond 32 bits
        started_at=1.25,
        finished_at=1.0 / 7.0,
    )


def cas(step_id: str, expected: set[JobStatus], at: int = 0, **changes: Any) -> StepUpdate:
    """An update of `step_id` if its status is one of `expected` in generation `at`."""
    return StepUpdate(step_id, frozenset(expected), at, changes)


# -- runs


async def test_create_and_get_round_trip_exactly(store: JobStore) -> None:
    run = full_run("r1")
    steps = [full_step("r1", i) for i in range(3)]
    created = await store.create_run(run, steps)
    assert created.seq > 0
    assert created == run.with_changes(seq=created.seq)
    fetched = await store.get_run("r1")
    assert fetched == created
    assert isinstance(fetched.approved, tuple) and isinstance(fetched.state, RunState)
    assert type(fetched.no_cache) is bool
    stored = await store.run_steps("r1")
    assert stored == steps
    assert all(isinstance(s.status, JobStatus) and isinstance(s.outputs, dict) for s in stored)


async def test_defaults_and_none_fields_round_trip(store: JobStore) -> None:
    run = make_run("r1")
    step = RunStep("r1", "only", 0, "only")
    created = await store.create_run(run, [step])
    assert await store.get_run("r1") == created == run.with_changes(seq=created.seq)
    assert created.finished_at is None and created.params == {} and created.approved == ()
    (stored,) = await store.run_steps("r1")
    assert stored == step
    assert stored.job_id is None and stored.cache_key is None and stored.started_at is None


async def test_a_run_without_steps(store: JobStore) -> None:
    await store.create_run(make_run("r1"), [])
    assert await store.run_steps("r1") == []


async def test_steps_come_back_by_index(store: JobStore) -> None:
    steps = make_steps("r1", 300)
    await store.create_run(make_run("r1"), list(reversed(steps)))
    assert await store.run_steps("r1") == steps


async def test_seq_increases(store: JobStore) -> None:
    seqs = [(await store.create_run(make_run(f"r{i}"), [])).seq for i in range(5)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5


async def test_duplicate_run_conflicts_and_keeps_the_first(store: JobStore) -> None:
    first = await store.create_run(make_run("r1"), make_steps("r1", 2))
    with pytest.raises(ConflictError, match="run r1 already exists"):
        await store.create_run(make_run("r1", name="other"), make_steps("r1", 5))
    assert await store.get_run("r1") == first
    assert len(await store.run_steps("r1")) == 2
    later = await store.create_run(make_run("r2"), [])
    assert later.seq > first.seq


async def test_steps_that_are_not_the_runs_are_refused(store: JobStore) -> None:
    with pytest.raises(ValueError, match="steps of run other"):
        await store.create_run(make_run("r1"), make_steps("other", 1))
    twice = [RunStep("r1", "a", 0, "a"), RunStep("r1", "a", 1, "a")]
    with pytest.raises(ValueError, match="given twice: a"):
        await store.create_run(make_run("r1"), twice)
    with pytest.raises(NotFoundError):
        await store.get_run("r1")


async def test_get_missing_run_not_found(store: JobStore) -> None:
    with pytest.raises(NotFoundError, match="no run nope"):
        await store.get_run("nope")
    assert await store.run_steps("nope") == []


async def test_list_runs_pages_newest_first(store: JobStore) -> None:
    for i in range(7):
        await store.create_run(make_run(f"r{i}"), [])
    page, cursor = await store.list_runs(limit=3)
    assert [r.id for r in page] == ["r6", "r5", "r4"] and cursor is not None
    page, cursor = await store.list_runs(limit=3, cursor=cursor)
    assert [r.id for r in page] == ["r3", "r2", "r1"] and cursor is not None
    page, cursor = await store.list_runs(limit=3, cursor=cursor)
    assert [r.id for r in page] == ["r0"] and cursor is None
    exact, cursor = await store.list_runs(limit=7)
    assert len(exact) == 7 and cursor is None
    assert exact[0] == await store.get_run("r6")


async def test_list_runs_state_filter(store: JobStore) -> None:
    states = [RunState.RUNNING, RunState.FAILED, RunState.RUNNING, RunState.SUCCEEDED]
    for i, state in enumerate(states * 2):
        await store.create_run(make_run(f"r{i}", state=state), [])
    page, cursor = await store.list_runs(state=RunState.RUNNING, limit=3)
    assert [r.id for r in page] == ["r6", "r4", "r2"] and cursor is not None
    page, cursor = await store.list_runs(state=RunState.RUNNING, limit=3, cursor=cursor)
    assert [r.id for r in page] == ["r0"] and cursor is None
    assert (await store.list_runs(state=RunState.CANCELLED)) == ([], None)


async def test_active_runs_are_running_or_waiting_oldest_first(store: JobStore) -> None:
    states = [
        RunState.SUCCEEDED,
        RunState.WAITING,
        RunState.RUNNING,
        RunState.FAILED,
        RunState.CANCELLED,
        RunState.RUNNING,
    ]
    for i, state in enumerate(states):
        await store.create_run(make_run(f"r{i}", state=state), [])
    assert [r.id for r in await store.active_runs()] == ["r1", "r2", "r5"]
    await store.update_run("r2", 0, {"state": RunState.SUCCEEDED, "finished_at": 5.0})
    await store.update_run("r0", 0, {"state": RunState.RUNNING})  # a retried run
    active = await store.active_runs()
    assert [r.id for r in active] == ["r0", "r1", "r5"]
    assert active[0] == await store.get_run("r0")


async def test_update_run_applies_changes_and_bumps_the_version(store: JobStore) -> None:
    created = await store.create_run(make_run("r1"), [])
    changes = {
        "state": RunState.FAILED,
        "approved": ("deploy", "ünï"),
        "finished_at": 99.5,
        "reason": "test[os=linux] failed",
        "generation": 1,
        "cancelled_by": "carol",
        "params": {"a": "b"},
        "no_cache": True,
    }
    updated = await store.update_run("r1", 0, changes)
    assert updated == created.with_changes(**changes, version=1)
    assert await store.get_run("r1") == updated
    again = await store.update_run("r1", 1, {"finished_at": None, "approved": ()})
    assert again.version == 2 and again.finished_at is None and again.approved == ()
    assert again.source == created.source and again.seq == created.seq
    assert (await store.update_run("r1", 2, {})).version == 3  # no change still bumps it


async def test_update_run_conflict_names_the_stored_version(store: JobStore) -> None:
    await store.create_run(make_run("r1", version=4), [])
    first = await store.update_run("r1", 4, {"reason": "first"})
    with pytest.raises(ConflictError, match="run r1 is at version 5, not 4"):
        await store.update_run("r1", 4, {"reason": "second"})
    assert await store.get_run("r1") == first


async def test_update_run_not_found(store: JobStore) -> None:
    with pytest.raises(NotFoundError, match="no run nope"):
        await store.update_run("nope", 0, {"reason": "x"})


@pytest.mark.parametrize("key", ["id", "seq", "version", "source", "no_such_field"])
async def test_update_run_refuses_other_fields(store: JobStore, key: str) -> None:
    created = await store.create_run(make_run("r1"), [])
    with pytest.raises(ValueError, match=key):
        await store.update_run("r1", 0, {key: "x", "reason": "y"})
    assert await store.get_run("r1") == created


async def test_concurrent_run_updates_exactly_one_wins(store: JobStore) -> None:
    await store.create_run(make_run("r1"), [])
    calls = [store.update_run("r1", 0, {"reason": f"by {i}"}) for i in range(40)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    winners = [r for r in results if isinstance(r, PipelineRun)]
    assert len(winners) == 1
    assert all(isinstance(r, ConflictError) for r in results if r is not winners[0])
    assert await store.get_run("r1") == winners[0] and winners[0].version == 1


# -- steps


async def test_update_steps_applies_each_update_that_holds(store: JobStore) -> None:
    await store.create_run(make_run("r1"), make_steps("r1", 4))
    results = await store.update_steps(
        "r1",
        [
            cas("s0", {PENDING}, status=RUNNING, job_id="r1.0.0", started_at=3.0),
            cas("s1", {RUNNING, SUCCEEDED}, status=SUCCEEDED),  # s1 is pending
            cas("s2", {PENDING}, at=1, status=RUNNING),  # s2 is in generation 0
            cas("nope", {PENDING}, status=RUNNING),
            cas("s3", {PENDING, RUNNING}, status=JobStatus.SKIPPED, reason="needs s1"),
        ],
    )
    assert [type(r) for r in results] == [
        RunStep,
        ConflictError,
        ConflictError,
        ConflictError,
        RunStep,
    ]
    assert "step s1 of run r1 is pending in generation 0, not running or succeeded" in str(
        results[1]
    )
    assert "is pending in generation 0, not pending in generation 1" in str(results[2])
    assert "run r1 has no step nope" in str(results[3])
    stored = {s.step_id: s for s in await store.run_steps("r1")}
    assert stored["s0"] == results[0]
    assert (stored["s0"].status, stored["s0"].job_id, stored["s0"].started_at) == (
        RUNNING,
        "r1.0.0",
        3.0,
    )
    assert stored["s1"].status is PENDING and stored["s2"].status is PENDING
    assert stored["s3"] == results[4] and stored["s3"].reason == "needs s1"


async def test_updates_of_one_step_apply_in_order(store: JobStore) -> None:
    await store.create_run(make_run("r1"), make_steps("r1", 1))
    results = await store.update_steps(
        "r1",
        [
            cas("s0", {PENDING}, status=RUNNING),
            cas("s0", {RUNNING}, status=SUCCEEDED, outputs={"v": "1"}, finished_at=4.0),
            cas("s0", {PENDING}, status=RUNNING),  # no longer pending
        ],
    )
    assert [type(r) for r in results] == [RunStep, RunStep, ConflictError]
    assert "is succeeded in generation 0" in str(results[2])
    (stored,) = await store.run_steps("r1")
    assert stored == results[1] and stored.outputs == {"v": "1"}


async def test_a_new_generation_refuses_updates_of_the_old_one(store: JobStore) -> None:
    await store.create_run(make_run("r1"), make_steps("r1", 1, status=JobStatus.FAILED))
    (retried,) = await store.update_steps(
        "r1", [cas("s0", {JobStatus.FAILED}, status=PENDING, generation=1, job_id=None)]
    )
    assert isinstance(retried, RunStep) and retried.generation == 1
    (late,) = await store.update_steps("r1", [cas("s0", {PENDING}, 0, status=RUNNING)])
    assert isinstance(late, ConflictError)
    (now,) = await store.update_steps("r1", [cas("s0", {PENDING}, 1, status=RUNNING)])
    assert isinstance(now, RunStep) and now.status is RUNNING


async def test_updates_of_an_unknown_run_all_conflict(store: JobStore) -> None:
    results = await store.update_steps("nope", [cas("s0", {PENDING}), cas("s1", {RUNNING})])
    assert all(isinstance(r, ConflictError) for r in results)
    assert "run nope has no step s0" in str(results[0])
    assert await store.update_steps("nope", []) == []


async def test_an_update_without_changes_only_checks(store: JobStore) -> None:
    await store.create_run(make_run("r1"), make_steps("r1", 1))
    (same,) = await store.update_steps("r1", [cas("s0", {PENDING})])
    assert same == (await store.run_steps("r1"))[0]
    (none,) = await store.update_steps("r1", [cas("s0", set(), status=RUNNING)])
    assert isinstance(none, ConflictError) and "not in any expected status" in str(none)
    assert (await store.run_steps("r1"))[0].status is PENDING


@pytest.mark.parametrize("key", ["run_id", "step_id", "index", "no_such_field"])
async def test_update_steps_refuses_other_fields_and_applies_nothing(
    store: JobStore, key: str
) -> None:
    steps = make_steps("r1", 2)
    await store.create_run(make_run("r1"), steps)
    with pytest.raises(ValueError, match=key):
        await store.update_steps(
            "r1",
            [cas("s0", {PENDING}, status=RUNNING), StepUpdate("s1", frozenset(), 0, {key: "x"})],
        )
    assert await store.run_steps("r1") == steps


async def test_step_values_round_trip_exactly(store: JobStore) -> None:
    await store.create_run(make_run("r1"), make_steps("r1", 1))
    changes = {
        name: getattr(full_step("r1"), name)
        for name in (
            "status",
            "job_id",
            "attempt",
            "reason",
            "outputs",
            "cache_key",
            "cached_from",
            "artifact_sha256",
            "artifact_bytes",
            "started_at",
            "finished_at",
        )
    }
    (updated,) = await store.update_steps("r1", [cas("s0", {PENDING}, **changes)])
    assert updated == RunStep("r1", "s0", 0, "s0", **changes)
    assert await store.run_steps("r1") == [updated]
    (cleared,) = await store.update_steps(
        "r1", [cas("s0", {SUCCEEDED}, outputs={}, cache_key=None, finished_at=None)]
    )
    assert await store.run_steps("r1") == [cleared]
    assert isinstance(cleared, RunStep) and cleared.outputs == {} and cleared.cache_key is None


async def test_concurrent_step_updates_exactly_one_wins(store: JobStore) -> None:
    await store.create_run(make_run("r1"), make_steps("r1", 3))
    calls = [
        store.update_steps("r1", [cas("s1", {PENDING}, status=RUNNING, job_id=f"by {i}")])
        for i in range(40)
    ]
    results = [r for (r,) in await asyncio.gather(*calls)]
    winners = [r for r in results if isinstance(r, RunStep)]
    assert len(winners) == 1
    assert sum(isinstance(r, ConflictError) for r in results) == 39
    stored = await store.run_steps("r1")
    assert stored[1] == winners[0]
    assert stored[0].status is PENDING and stored[2].status is PENDING


# -- the result cache


async def finish(store: JobStore, run_id: str, step_id: str, **changes: Any) -> RunStep:
    (done,) = await store.update_steps(run_id, [cas(step_id, {PENDING, RUNNING}, **changes)])
    assert isinstance(done, RunStep)
    return done


async def test_cached_step_is_the_newest_finished_success_that_ran_itself(
    store: JobStore,
) -> None:
    assert await store.cached_step("k") is None
    await store.create_run(make_run("r1"), make_steps("r1", 6, cache_key="k"))
    await store.create_run(make_run("r2"), make_steps("r2", 2, cache_key="other"))
    await finish(store, "r1", "s0", status=RUNNING)  # running: not a result yet
    assert await store.cached_step("k") is None
    older = await finish(store, "r1", "s1", status=SUCCEEDED, finished_at=10.0, job_id="j1")
    newer = await finish(store, "r1", "s2", status=SUCCEEDED, finished_at=20.0, job_id="j2")
    await finish(store, "r1", "s3", status=JobStatus.FAILED, finished_at=30.0)
    await finish(store, "r1", "s4", status=SUCCEEDED, finished_at=40.0, cached_from="j2")
    await finish(store, "r2", "s0", status=SUCCEEDED, finished_at=50.0)  # another key
    assert await store.cached_step("k") == newer
    assert await store.cached_step("other") == (await store.run_steps("r2"))[0]
    assert await store.cached_step("missing") is None
    # The newest result leaves success (its run is retried): the older one counts again.
    (reset,) = await store.update_steps("r1", [cas("s2", {SUCCEEDED}, status=PENDING)])
    assert isinstance(reset, RunStep)
    assert await store.cached_step("k") == older
    # A step whose key changes leaves the old key.
    (moved,) = await store.update_steps("r1", [cas("s1", {SUCCEEDED}, cache_key="k2")])
    assert await store.cached_step("k") is None
    assert await store.cached_step("k2") == moved


async def test_cached_step_order_among_equals(store: JobStore) -> None:
    # The same finish time: the highest run id, then step id; a missing time comes last.
    await store.create_run(make_run("ra"), make_steps("ra", 3, cache_key="k"))
    await store.create_run(make_run("rb"), make_steps("rb", 1, cache_key="k"))
    unknown = await finish(store, "ra", "s0", status=SUCCEEDED)
    assert await store.cached_step("k") == unknown
    await finish(store, "ra", "s1", status=SUCCEEDED, finished_at=5.0)
    late_step = await finish(store, "ra", "s2", status=SUCCEEDED, finished_at=5.0)
    assert await store.cached_step("k") == late_step
    late_run = await finish(store, "rb", "s0", status=SUCCEEDED, finished_at=5.0)
    assert await store.cached_step("k") == late_run


# -- durability, lifecycle, schema


async def test_runs_and_steps_survive_close_and_open(backend: Backend) -> None:
    first = await reopen(backend)
    created = await first.create_run(full_run("r1"), [full_step("r1", i) for i in range(2)])
    await first.create_run(make_run("r2"), make_steps("r2", 2, cache_key="k"))
    moved = await first.update_run("r1", 5, {"state": RunState.RUNNING, "approved": ("x",)})
    (step,) = await first.update_steps(
        "r2", [cas("s1", {PENDING}, status=SUCCEEDED, finished_at=1.0, outputs={"o": "ü"})]
    )
    await first.close()

    second = await reopen(backend)
    try:
        assert await second.get_run("r1") == moved and moved.seq == created.seq
        assert await second.run_steps("r1") == [full_step("r1", i) for i in range(2)]
        assert (await second.run_steps("r2"))[1] == step
        assert await second.cached_step("k") == step
        assert [r.id for r in await second.active_runs()] == ["r1", "r2"]
        later = await second.create_run(make_run("r3"), [])
        assert later.seq > created.seq
    finally:
        await second.close()


async def test_closed_store_refuses_pipeline_calls(backend: Backend) -> None:
    store = backend.make()
    with pytest.raises(StoreError, match="not open"):
        await store.get_run("r1")
    await store.open()
    await store.create_run(make_run("r1"), make_steps("r1", 1))
    await store.close()
    for call in (
        store.create_run(make_run("r2"), []),
        store.get_run("r1"),
        store.list_runs(),
        store.active_runs(),
        store.update_run("r1", 0, {}),
        store.run_steps("r1"),
        store.update_steps("r1", [cas("s0", {PENDING})]),
        store.cached_step("k"),
    ):
        with pytest.raises(StoreError, match="closed"):
            await call


async def test_a_database_of_the_previous_version_gets_the_pipeline_tables(
    backend: Backend,
) -> None:
    needs_a_database(backend, "no schema: nothing is kept on disk to migrate")
    # The release before the pipeline tables (later steps came after them).
    steps = [m.description for m in backend.migrations]
    old = await reopen(
        backend, migrations=backend.migrations[: steps.index("pipeline runs and their steps")]
    )
    job = await old.create_job(Job(id="j1", spec=JobSpec(command="true"), created_at=1.0))
    await old.close()
    assert not await backend.has_table("pipeline_runs")
    upgraded = await reopen(backend)
    try:
        assert await backend.has_table("pipeline_runs") and await backend.has_table(
            "pipeline_steps"
        )
        assert await upgraded.get_job("j1") == job
        created = await upgraded.create_run(full_run("r1"), [full_step("r1")])
        assert await upgraded.get_run("r1") == created
        assert await upgraded.run_steps("r1") == [full_step("r1")]
    finally:
        await upgraded.close()


# -- several stores on one database (servers sharing it)


@pytest.fixture(params=["sqlite", "postgres"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return sqlite_backend(tmp_path / "shared.db")
    return postgres_backend(request.getfixturevalue("postgres_dsn"))


async def test_two_stores_racing_for_the_same_steps_each_win_once(shared: Backend) -> None:
    one, two = await reopen(shared), await reopen(shared)
    try:
        await one.create_run(make_run("r1"), make_steps("r1", 100))
        calls = [
            store.update_steps("r1", [cas(f"s{i}", {PENDING}, status=RUNNING, job_id=name)])
            for i in range(100)
            for store, name in ((one, "one"), (two, "two"), (one, "one"), (two, "two"))
        ]
        results = [r for (r,) in await asyncio.gather(*calls)]
        runs = [
            store.update_run("r1", 0, {"reason": name})
            for store, name in ((one, "one"), (two, "two")) * 10
        ]
        updates = await asyncio.gather(*runs, return_exceptions=True)
    finally:
        await asyncio.gather(one.close(), two.close())
    winners = [r for r in results if isinstance(r, RunStep)]
    assert sorted(w.step_id for w in winners) == sorted(f"s{i}" for i in range(100))
    assert sum(isinstance(r, ConflictError) for r in results) == 300
    again = await reopen(shared)
    try:
        assert {s.step_id: s for s in await again.run_steps("r1")} == {
            w.step_id: w for w in winners
        }
        won = [u for u in updates if isinstance(u, PipelineRun)]
        assert len(won) == 1 and all(
            isinstance(u, ConflictError) for u in updates if u is not won[0]
        )
        assert await again.get_run("r1") == won[0]
    finally:
        await again.close()
