"""The queue of jobs waiting for a worker: one heap per *shape* (labels, cpu, memory).

Jobs of one shape fit the same workers, so a scheduling pass looks only at the head of each
shape's heap, in rank order: a shape no worker can take costs one look, however many jobs it
holds. Removing a job is lazy: its heap entry is dropped when it comes up. No I/O here.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from hodei.domain.jobs import Job, JobSpec

# What placement looks at in a spec: one rejection in a pass stands for the whole shape.
Shape = tuple[tuple[tuple[str, str], ...], float, int, str]  # labels, cpu, memory, image
Entry = tuple[float, int, str]  # (rank, seq, job id): heap order
Head = tuple[Entry, Shape]  # a shape's head entry, in the heap of heads a pass walks


def shape_of(spec: JobSpec) -> Shape:
    return (tuple(sorted(spec.labels.items())), spec.cpu, spec.memory_bytes, spec.image or "")


def queue_rank(job: Job, aging_s: float) -> float:
    """Lower runs first. With aging, waiting `aging_s` seconds is worth one priority point:
    priority + (now - created) / aging_s orders jobs as priority - created / aging_s does
    (now is the same for all), so the rank is fixed at enqueue time and no job starves."""
    if aging_s <= 0:
        return float(-job.spec.priority)
    return job.created_at / aging_s - job.spec.priority


class JobQueue:
    def __init__(self, aging_s: float = 60.0) -> None:
        self.aging_s = aging_s
        self._shapes: dict[Shape, list[Entry]] = {}
        self._queued: dict[str, Job] = {}
        self._why: dict[Shape, tuple[str, bool]] = {}  # why a shape waits; True: unschedulable

    def __len__(self) -> int:
        return len(self._queued)

    def get(self, job_id: str) -> Job | None:
        return self._queued.get(job_id)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._queued

    def push(self, job: Job) -> None:
        self._queued[job.id] = job
        heap = self._shapes.setdefault(shape_of(job.spec), [])
        heapq.heappush(heap, (queue_rank(job, self.aging_s), job.seq, job.id))

    def discard(self, job_id: str) -> None:
        self._queued.pop(job_id, None)  # its heap entry is dropped when it comes up

    def _head(self, heap: list[Entry]) -> Job | None:
        """The job at the top of a shape's heap, dropping stale entries (cancelled, placed)."""
        while heap:
            entry = heap[0]
            job = self._queued.get(entry[2])
            if job is not None and job.seq == entry[1]:
                return job
            heapq.heappop(heap)
        return None

    # ---- what a pass reads and changes -------------------------------------------------------
    def heads(self) -> list[Head]:
        """The head entry of each shape, as a heap (shapes left empty are forgotten)."""
        heads: list[Head] = []
        for shape, heap in list(self._shapes.items()):
            if self._head(heap) is None:
                del self._shapes[shape]
                self._why.pop(shape, None)
            else:
                heads.append((heap[0], shape))
        heapq.heapify(heads)
        return heads

    def first(self, shape: Shape) -> Job:
        """The job at the head of `shape` (one that heads() or take() has just returned)."""
        return self._queued[self._shapes[shape][0][2]]

    def take(self, shape: Shape) -> Entry | None:
        """Remove the job at the head of `shape` (placed); the shape's next head, if any."""
        heap = self._shapes[shape]
        del self._queued[heapq.heappop(heap)[2]]
        self._why.pop(shape, None)
        return None if self._head(heap) is None else heap[0]

    def reject(self, shape: Shape, why: str, never: bool) -> None:
        """No worker takes `shape` now (`never`: none ever will), for the reason `why`."""
        self._why[shape] = (why, never)

    # ---- what is asked between passes --------------------------------------------------------
    def reason(self, job_id: str) -> tuple[str, bool] | None:
        """Why a queued job's shape waits, as the last pass rejected it ("" if it did not);
        None when the job is not queued."""
        job = self._queued.get(job_id)
        if job is None:
            return None
        return self._why.get(shape_of(job.spec), ("", False))

    def fitting(self, fits: Callable[[dict[str, str], str | None], bool]) -> int:
        """Queued jobs (stale heap entries included) that are not unschedulable and whose
        labels and image `fits` accepts."""
        return sum(
            len(heap)
            for shape, heap in self._shapes.items()
            if not self._why.get(shape, ("", False))[1] and fits(dict(shape[0]), shape[3] or None)
        )

    def with_image(self, image: str) -> list[Job]:
        """The queued jobs that asked for `image`."""
        return [job for job in self._queued.values() if job.spec.image == image]

    def waiting_jobs(self, shapes: list[Shape]) -> list[Job]:
        """The queued jobs of `shapes`, highest rank first."""
        jobs: dict[str, Job] = {}  # by id: a re-queued job may have two entries
        for e in sorted(e for shape in shapes for e in self._shapes[shape]):
            job = self._queued.get(e[2])
            if job is not None and job.seq == e[1]:
                jobs.setdefault(job.id, job)
        return list(jobs.values())
