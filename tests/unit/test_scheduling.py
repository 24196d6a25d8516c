"""Placement is a pure function of a snapshot; each rejection says why."""

from __future__ import annotations

from hodei.domain.jobs import JobSpec
from hodei.domain.scheduling import (
    Placement,
    Policy,
    Rejection,
    WorkerView,
    place,
    release,
    reserve,
    unschedulable,
)


def workers() -> list[WorkerView]:
    return [
        WorkerView("a", {"os": "linux"}, slots=2, running=1, cpus=4, memory_bytes=8 << 30),
        WorkerView("b", {"os": "linux", "gpu": "yes"}, slots=2, cpus=2, memory_bytes=4 << 30),
        WorkerView("c", {}, slots=1, running=1),
    ]


def test_spread_prefers_the_least_loaded_worker() -> None:
    assert place(JobSpec(command="x"), workers()) == Placement("b")


def test_binpack_prefers_the_fullest_worker_that_fits() -> None:
    assert place(JobSpec(command="x"), workers(), Policy.BINPACK) == Placement("a")


def test_labels_filter_and_reasons() -> None:
    outcome = place(JobSpec(command="x", labels={"gpu": "no"}), workers())
    assert isinstance(outcome, Rejection)
    assert outcome.reasons["a"] == "missing labels gpu=no"
    assert outcome.reasons["c"] == "missing labels gpu=no"
    assert "3 worker(s): missing labels gpu=no" in outcome.summary()


def test_resources_filter() -> None:
    outcome = place(JobSpec(command="x", cpu=3), workers())
    assert outcome == Placement("a")  # b has 2 cpus, c has no free slot
    big = place(JobSpec(command="x", memory_bytes=16 << 30, labels={"os": "linux"}), workers())
    assert isinstance(big, Rejection)
    assert big.reasons["a"] == big.reasons["b"] == "not enough free memory"


def test_reserve_and_release_slots() -> None:
    pool = workers()
    spec = JobSpec(command="x", cpu=1)
    reserve(pool[1], spec)
    reserve(pool[1], spec)
    assert pool[1].free_slots == 0 and pool[1].reserved_cpu == 2
    assert isinstance(place(JobSpec(command="x", labels={"gpu": "yes"}), pool), Rejection)
    release(pool[1], spec)
    assert place(JobSpec(command="x", labels={"gpu": "yes"}), pool) == Placement("b")


def test_no_workers_is_a_rejection_with_a_summary() -> None:
    outcome = place(JobSpec(command="x"), [])
    assert isinstance(outcome, Rejection) and outcome.summary() == "no worker connected"


def test_unschedulable_names_every_reason_and_the_providers() -> None:
    known = workers()[:2]  # c reports no memory: it is not ruled out
    assert unschedulable(JobSpec(command="x", memory_bytes=64 << 30), workers(), str) is None
    never = unschedulable(
        JobSpec(command="x", memory_bytes=64 << 30), known, lambda spec: "at most 8 GiB"
    )
    assert never is not None and never.startswith("unschedulable:")
    assert "only 8192 MiB memory" in never and "only 4096 MiB memory" in never
    assert "provider: at most 8 GiB" in never
    # A worker that could take it when idle, or a provider that could make one: not never.
    assert unschedulable(JobSpec(command="x", cpu=3), workers(), lambda s: "no") is None
    assert unschedulable(JobSpec(command="x", cpu=64), workers(), lambda s: None) is None


def test_aging_lets_an_old_low_priority_job_overtake() -> None:
    from hodei.domain.jobs import Job
    from hodei.server.core.job_queue import queue_rank

    old_low = Job(id="a", spec=JobSpec(command="x", priority=0), created_at=1000.0)
    new_high = Job(id="b", spec=JobSpec(command="x", priority=5), created_at=1000.0 + 400)
    fresh_high = Job(id="c", spec=JobSpec(command="x", priority=5), created_at=1000.0 + 200)
    assert queue_rank(old_low, 60) < queue_rank(new_high, 60)  # waited 400 s > 5 points
    assert queue_rank(fresh_high, 60) < queue_rank(old_low, 60)  # 200 s < 5 points
    assert queue_rank(new_high, 0) < queue_rank(old_low, 0)  # aging off: priority only
