"""Placement: a pure function of a snapshot of the workers, recording why each one was rejected.

`place(job, workers)` filters (labels, free slots, free cpu/memory) and scores the survivors
(least-loaded by default, bin-packing on request). The reasons feed "why is my job pending?".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from hodei.domain.jobs import JobSpec


class Policy(StrEnum):
    SPREAD = "spread"  # least-loaded first: lowest latency on bare metal
    BINPACK = "binpack"  # fullest first: fewer workers kept alive


@dataclass(slots=True)
class WorkerView:
    """What the scheduler knows of one connected worker."""

    id: str
    labels: dict[str, str]
    slots: int
    running: int = 0  # jobs assigned or running, including reservations
    cpus: float = 0.0  # capacity; 0 = unknown (not checked)
    memory_bytes: int = 0
    reserved_cpu: float = 0.0
    reserved_memory: int = 0
    accepting: bool = True  # False while draining or shutting down

    @property
    def free_slots(self) -> int:
        return self.slots - self.running if self.accepting else 0


@dataclass(frozen=True, slots=True)
class Placement:
    worker_id: str


@dataclass(frozen=True, slots=True)
class Rejection:
    reasons: dict[str, str] = field(default_factory=dict)  # worker id -> why not

    def summary(self) -> str:
        if not self.reasons:
            return "no worker connected"
        counts: dict[str, int] = {}
        for why in self.reasons.values():
            counts[why] = counts.get(why, 0) + 1
        parts = [f"{n} worker(s): {why}" for why, n in sorted(counts.items())]
        return "; ".join(parts)


def missing_labels(required: dict[str, str], offered: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in sorted(required.items()) if offered.get(k) != v]


def reject_reason(spec: JobSpec, worker: WorkerView) -> str | None:
    """Why `worker` cannot take `spec` now, or None when it can."""
    missing = missing_labels(spec.labels, worker.labels)
    if missing:
        return "missing labels " + ",".join(missing)
    if not worker.accepting:
        return "draining"
    if worker.free_slots <= 0:
        return "no free slot"
    if worker.cpus and spec.cpu > worker.cpus - worker.reserved_cpu:
        return f"not enough free cpu ({worker.cpus - worker.reserved_cpu:g} < {spec.cpu:g})"
    if worker.memory_bytes and spec.memory_bytes > worker.memory_bytes - worker.reserved_memory:
        return "not enough free memory"
    return None


def _load(worker: WorkerView) -> float:
    return worker.running / worker.slots if worker.slots else 1.0


def place(
    spec: JobSpec, workers: Iterable[WorkerView], policy: Policy = Policy.SPREAD
) -> Placement | Rejection:
    reasons: dict[str, str] = {}
    fits: list[WorkerView] = []
    for worker in workers:
        why = reject_reason(spec, worker)
        if why is None:
            fits.append(worker)
        else:
            reasons[worker.id] = why
    if not fits:
        return Rejection(reasons)
    sign = 1.0 if policy is Policy.SPREAD else -1.0
    best = min(fits, key=lambda w: (sign * _load(w), w.id))
    return Placement(best.id)


def reserve(worker: WorkerView, spec: JobSpec) -> None:
    worker.running += 1
    worker.reserved_cpu += spec.cpu
    worker.reserved_memory += spec.memory_bytes


def release(worker: WorkerView, spec: JobSpec) -> None:
    worker.running = max(0, worker.running - 1)
    worker.reserved_cpu = max(0.0, worker.reserved_cpu - spec.cpu)
    worker.reserved_memory = max(0, worker.reserved_memory - spec.memory_bytes)


def never_fits(spec: JobSpec, worker: WorkerView) -> str | None:
    """Why `worker` could not take `spec` even when idle (labels, total capacity)."""
    missing = missing_labels(spec.labels, worker.labels)
    if missing:
        return "missing labels " + ",".join(missing)
    if worker.cpus and spec.cpu > worker.cpus:
        return f"only {worker.cpus:g} cpu"
    if worker.memory_bytes and spec.memory_bytes > worker.memory_bytes:
        return f"only {worker.memory_bytes >> 20} MiB memory"
    return None


def unschedulable(
    spec: JobSpec,
    workers: Iterable[WorkerView],
    ceiling: Callable[[JobSpec], str | None],
) -> str | None:
    """A reason when no connected worker could ever take `spec` and the provider cannot make
    one that could (`ceiling` says why not, or None when it can); else None."""
    reasons = {}
    for worker in workers:
        why = never_fits(spec, worker)
        if why is None:
            return None
        reasons[worker.id] = why
    provider = ceiling(spec)
    if provider is None:
        return None
    connected = Rejection(reasons).summary() if reasons else "no worker connected"
    return f"unschedulable: {connected}; provider: {provider}"
