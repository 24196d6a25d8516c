"""Placement is a pure function of a snapshot; each rejection says why."""

from __future__ import annotations

import pytest

from hodei.domain.jobs import JobSpec
from hodei.domain.scheduling import (
    Placement,
    Policy,
    Rejection,
    WorkerView,
    cpu_fits,
    labels_fit,
    memory_fits,
    place,
    release,
    reserve,
    slots_free,
    unschedulable,
)
from hodei.server.core.provisioning import Provisioner


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
    assert isinstance(big, Rejection)  # too small, whatever they run
    assert big.reasons == {
        "a": "only 8192 MiB memory",
        "b": "only 4096 MiB memory",
        "c": "missing labels os=linux",
    }
    roomy = WorkerView("d", {}, slots=2, memory_bytes=8 << 30)
    reserve(roomy, JobSpec(command="x", memory_bytes=6 << 30))
    busy = place(JobSpec(command="x", memory_bytes=6 << 30), [roomy])
    assert isinstance(busy, Rejection)  # big enough, but not while it runs the other job
    assert busy.reasons == {"d": "not enough free memory"}


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


def test_labels_fit() -> None:
    assert labels_fit({}, {}) is None
    assert labels_fit({"os": "linux"}, {"os": "linux", "gpu": "1"}) is None
    assert labels_fit({"gpu": "1"}, {"os": "linux"}) == "missing labels gpu=1"
    assert labels_fit({"gpu": "1"}, {"gpu": "0"}) == "missing labels gpu=1"
    # All the missing ones, sorted; a carried one is not named.
    both = {"os": "linux", "arch": "arm", "gpu": "1"}
    assert labels_fit(both, {"os": "linux"}) == "missing labels arch=arm,gpu=1"


def test_slots_free() -> None:
    assert slots_free(WorkerView("w", {}, slots=2, running=1)) is None
    assert slots_free(WorkerView("w", {}, slots=2, running=2)) == "no free slot"
    assert slots_free(WorkerView("w", {}, slots=0)) == "no free slot"
    assert slots_free(WorkerView("w", {}, slots=2, accepting=False)) == "draining"


def test_cpu_fits() -> None:
    assert cpu_fits(JobSpec(command="x", cpu=64), 0) is None  # capacity unknown: not checked
    assert cpu_fits(JobSpec(command="x", cpu=2), 4, reserved=2) is None  # exactly what is left
    assert cpu_fits(JobSpec(command="x", cpu=8), 4) == "only 4 cpu"
    assert cpu_fits(JobSpec(command="x", cpu=8), 4, reserved=1) == "only 4 cpu"
    assert cpu_fits(JobSpec(command="x", cpu=1), 0.5) == "only 0.5 cpu"
    assert cpu_fits(JobSpec(command="x", cpu=3), 4, reserved=2) == "not enough free cpu (2 < 3)"


def test_memory_fits() -> None:
    gib = 1 << 30
    assert memory_fits(JobSpec(command="x", memory_bytes=64 * gib), 0) is None
    assert memory_fits(JobSpec(command="x", memory_bytes=2 * gib), 4 * gib, 2 * gib) is None
    assert memory_fits(JobSpec(command="x", memory_bytes=8 * gib), 4 * gib) == (
        "only 4096 MiB memory"
    )
    assert memory_fits(JobSpec(command="x", memory_bytes=3 * gib), 4 * gib, 2 * gib) == (
        "not enough free memory"
    )


def provider(
    labels: dict[str, str] | None = None, max_cpus: float = 0.0, max_memory: int = 0
) -> Provisioner:
    """A provisioner holding only the limits ceiling() and fits() read: they use none of the
    wiring (provider, registry, OTPs) its constructor sets up."""
    made = Provisioner.__new__(Provisioner)
    made.max_workers = 1
    made.labels = dict(labels or {})
    made.label_keys = frozenset()
    made.max_cpus = max_cpus
    made.max_memory = max_memory
    return made


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (JobSpec(command="x", cpu=8), "only 4 cpu"),
        (JobSpec(command="x", memory_bytes=16 << 30), "only 8192 MiB memory"),
        (JobSpec(command="x", labels={"arch": "sparc"}), "missing labels arch=sparc"),
    ],
)
def test_placement_unschedulable_and_provider_agree(spec: JobSpec, reason: str) -> None:
    """An idle worker and the largest one the provider can make, of one size, refuse a job
    with one text. They did not: for cpu, placement said "not enough free cpu (4 < 8)", the
    unschedulable check "only 4 cpu" and the provider "at most 4 cpu"; for memory, "not
    enough free memory", "only 8192 MiB memory", "at most 8192 MiB memory"; for labels, the
    provider said "its workers do not carry arch=sparc"."""
    idle = WorkerView("w", {"os": "linux"}, slots=1, cpus=4, memory_bytes=8 << 30)
    limits = provider({"os": "linux"}, max_cpus=4, max_memory=8 << 30)
    placed = place(spec, [idle])
    assert isinstance(placed, Rejection) and placed.summary() == f"1 worker(s): {reason}"
    assert limits.ceiling(spec) == reason
    never = unschedulable(spec, [idle], limits.ceiling)
    assert never == f"unschedulable: 1 worker(s): {reason}; provider: {reason}"
    assert limits.fits(spec.labels, None) is (labels_fit(spec.labels, limits.labels) is None)


def test_provider_ceiling() -> None:
    limits = provider({"os": "linux"}, max_cpus=4, max_memory=8 << 30)
    assert limits.ceiling(JobSpec(command="x", cpu=4, memory_bytes=8 << 30)) is None
    assert limits.fits({"os": "linux"}, None) and not limits.fits({"os": "mac"}, None)
    assert provider().ceiling(JobSpec(command="x", cpu=512)) is None  # limits unknown
    limits.max_workers = 0
    assert limits.ceiling(JobSpec(command="x")) == "provisioning is off (max workers 0)"


def test_aging_lets_an_old_low_priority_job_overtake() -> None:
    from hodei.domain.jobs import Job
    from hodei.server.core.job_queue import queue_rank

    old_low = Job(id="a", spec=JobSpec(command="x", priority=0), created_at=1000.0)
    new_high = Job(id="b", spec=JobSpec(command="x", priority=5), created_at=1000.0 + 400)
    fresh_high = Job(id="c", spec=JobSpec(command="x", priority=5), created_at=1000.0 + 200)
    assert queue_rank(old_low, 60) < queue_rank(new_high, 60)  # waited 400 s > 5 points
    assert queue_rank(fresh_high, 60) < queue_rank(old_low, 60)  # 200 s < 5 points
    assert queue_rank(new_high, 0) < queue_rank(old_low, 0)  # aging off: priority only
