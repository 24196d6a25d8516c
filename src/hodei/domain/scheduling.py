"""Placement: a pure function of a snapshot of the workers, recording why each one was rejected.

What "fits" means is written once, as small predicates that return None when a requirement
holds and else the reason a user sees: `labels_fit`, `slots_free`, `cpu_fits`, `memory_fits`.
The image a job asks for is a key, not a size: `image_fits` holds only for a worker of that
very image (None: the provider's own worker image, or no container at all). They are composed
three ways: `reject_reason` (can this worker take the job now?), `never_fits` (could it even
when idle?) and `size_fits`, which the provisioner also uses to
judge the largest worker it can make, so a refusal reads the same wherever it comes from.

`place(job, workers)` filters with `reject_reason` and scores the survivors (least-loaded by
default, bin-packing on request). The reasons feed "why is my job pending?".
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
    image: str | None = None  # the container image it runs in (None: the worker image)

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


# ---- what "fits" means ----------------------------------------------------------------------
# Each predicate returns None when it holds, else its reason text. They run per job per worker
# on the scheduler's hot path, so a text is only built when the requirement fails.


def labels_fit(required: dict[str, str], offered: dict[str, str]) -> str | None:
    """Whether `offered` carries every label of `required`. It takes labels rather than a spec
    because the provisioner asks about a queue shape's labels alone."""
    if required:  # most jobs ask for none: skip building an items iterator
        for key, value in required.items():
            if offered.get(key) != value:
                if len(required) == 1:  # the usual refusal: no sort, no list
                    return f"missing labels {key}={value}"
                return "missing labels " + ",".join(missing_labels(required, offered))
    return None


def image_fits(wanted: str | None, offered: str | None) -> str | None:
    """Whether a worker running `offered` takes a job that asks for `wanted` (None: the
    provider's worker image): only the very same image does."""
    if wanted == offered:
        return None
    has = f"image {offered}" if offered is not None else "the worker image"
    return f"runs {has}, not {wanted if wanted is not None else 'the worker image'}"


def slots_free(worker: WorkerView) -> str | None:
    """Whether `worker` takes another job now (accepting, with a free slot)."""
    if not worker.accepting:
        return "draining"
    if worker.running >= worker.slots:
        return "no free slot"
    return None


def cpu_fits(spec: JobSpec, cpus: float, reserved: float = 0.0) -> str | None:
    """Whether `cpus` (0 = unknown: not checked) less `reserved` leave room for `spec`. A
    total too small and one too busy read differently: only the second passes with time."""
    if not cpus or spec.cpu <= cpus - reserved:
        return None
    if spec.cpu > cpus:
        return f"only {cpus:g} cpu"
    return f"not enough free cpu ({cpus - reserved:g} < {spec.cpu:g})"


def memory_fits(spec: JobSpec, memory_bytes: int, reserved: int = 0) -> str | None:
    """Whether `memory_bytes` (0 = unknown: not checked) less `reserved` leave room for
    `spec`; worded as `cpu_fits`."""
    if not memory_bytes or spec.memory_bytes <= memory_bytes - reserved:
        return None
    if spec.memory_bytes > memory_bytes:
        return f"only {memory_bytes >> 20} MiB memory"
    return "not enough free memory"


def size_fits(spec: JobSpec, labels: dict[str, str], cpus: float, memory_bytes: int) -> str | None:
    """Why an idle worker with these labels and this capacity (0 = unknown) could not take
    `spec`, or None when it could: a connected worker or one the provider can make."""
    return (
        labels_fit(spec.labels, labels) or cpu_fits(spec, cpus) or memory_fits(spec, memory_bytes)
    )


def reject_reason(spec: JobSpec, worker: WorkerView) -> str | None:
    """Why `worker` cannot take `spec` now, or None when it can."""
    return (
        image_fits(spec.image, worker.image)
        or labels_fit(spec.labels, worker.labels)
        or slots_free(worker)
        or cpu_fits(spec, worker.cpus, worker.reserved_cpu)
        or memory_fits(spec, worker.memory_bytes, worker.reserved_memory)
    )


def never_fits(spec: JobSpec, worker: WorkerView) -> str | None:
    """Why `worker` could not take `spec` even when idle (image, labels, total capacity)."""
    return image_fits(spec.image, worker.image) or size_fits(
        spec, worker.labels, worker.cpus, worker.memory_bytes
    )


def place(
    spec: JobSpec, workers: Iterable[WorkerView], policy: Policy = Policy.SPREAD
) -> Placement | Rejection:
    reasons: dict[str, str] = {}
    # The best so far is kept in locals rather than listing the survivors and keying min():
    # no list, key tuple or closure per worker.
    best: WorkerView | None = None
    best_load = 0.0
    sign = 1.0 if policy is Policy.SPREAD else -1.0
    for worker in workers:
        why = reject_reason(spec, worker)
        if why is not None:
            reasons[worker.id] = why
            continue
        load = sign * worker.running / worker.slots  # it fits: slots > running >= 0
        if best is None or load < best_load or (load == best_load and worker.id < best.id):
            best, best_load = worker, load
    if best is None:
        return Rejection(reasons)
    return Placement(best.id)


def reserve(worker: WorkerView, spec: JobSpec) -> None:
    worker.running += 1
    worker.reserved_cpu += spec.cpu
    worker.reserved_memory += spec.memory_bytes


def release(worker: WorkerView, spec: JobSpec) -> None:
    worker.running = max(0, worker.running - 1)
    worker.reserved_cpu = max(0.0, worker.reserved_cpu - spec.cpu)
    worker.reserved_memory = max(0, worker.reserved_memory - spec.memory_bytes)


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
