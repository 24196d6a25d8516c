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
