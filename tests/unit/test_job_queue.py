"""JobQueue: the per-shape heaps of queued jobs and what a scheduling pass reads of them."""

from __future__ import annotations

import heapq

from hodei.domain.jobs import Job, JobSpec
from hodei.server.core.job_queue import JobQueue, shape_of


def job(job_id: str, seq: int, priority: int = 0, **labels: str) -> Job:
    spec = JobSpec(command="x", priority=priority, labels=labels)
    return Job(id=job_id, spec=spec, created_at=1000.0 + seq, seq=seq)


def drain(queue: JobQueue) -> list[str]:
    """Take every job in the order a pass with room for all of them would."""
    order = []
    heads = queue.heads()
    while heads:
        shape = heads[0][1]
        order.append(queue.first(shape).id)
        following = queue.take(shape)
        if following is None:
            heapq.heappop(heads)
        else:
            heapq.heapreplace(heads, (following, shape))
    return order


def test_jobs_come_out_by_priority_then_queue_order_across_shapes() -> None:
    queue = JobQueue(aging_s=0)
    for j in (job("a", 1), job("b", 2, gpu="1"), job("c", 3, priority=5), job("d", 4)):
        queue.push(j)
    assert len(queue) == 4 and "b" in queue
    assert len(queue.heads()) == 2  # one head per shape
    assert drain(queue) == ["c", "a", "b", "d"]
    assert len(queue) == 0 and queue.heads() == []


def test_discarded_and_requeued_jobs_leave_stale_entries_that_are_skipped() -> None:
    queue = JobQueue(aging_s=0)
    first, second = job("a", 1), job("b", 2)
    queue.push(first)
    queue.push(second)
    queue.discard("a")
    assert "a" not in queue and queue.reason("a") is None
    queue.push(job("a", 7))  # queued again: a new seq, the old entry is stale
    assert queue.fitting(lambda labels, image: True) == 3  # stale entries are counted
    assert [j.id for j in queue.waiting_jobs([shape_of(first.spec)])] == ["b", "a"]
    assert drain(queue) == ["b", "a"]


def test_a_rejected_shape_keeps_its_reason_until_a_job_of_it_is_placed() -> None:
    queue = JobQueue()
    cpu, gpu = job("a", 1), job("b", 2, gpu="1")
    for j in (cpu, gpu, job("c", 3, gpu="1")):
        queue.push(j)
    assert queue.reason("b") == ("", False)
    queue.reject(shape_of(gpu.spec), "unschedulable: no gpu", True)
    queue.reject(shape_of(cpu.spec), "waiting for a worker", False)
    assert queue.reason("c") == ("unschedulable: no gpu", True)
    assert queue.fitting(lambda labels, image: True) == 1  # the unschedulable shape does not count
    assert queue.fitting(lambda labels, image: "gpu" in labels) == 0
    assert queue.take(shape_of(cpu.spec)) is None  # placed: its shape is empty
    assert queue.reason("a") is None
    heads = queue.heads()  # the empty shape is forgotten with its reason
    assert [shape for _, shape in heads] == [shape_of(gpu.spec)]
    assert queue.take(shape_of(gpu.spec)) is not None
    assert queue.reason("c") == ("", False)
