"""`plan` kept up to date one change at a time.

A run engine asks `plan` after every change to a run; on a DAG of n jobs that is O(n) each
time, O(n^2) over a run. A `Tracker` holds the evaluation and, when jobs change status,
re-evaluates only the steps whose inputs changed: the changed jobs' steps, then their
dependents for as long as a step's outcome changes. Its `plan()` answers what
`dag.plan(dag, states, approved)` answers for the same states.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Mapping

from hodei.domain.pipelines.dag import (
    Dag,
    Plan,
    Skip,
    _needs_met,
    _outcome,
    _skip_reason,
    _StepOutcome,
)
from hodei.domain.pipelines.model import JobStatus, StepJob, When


class Tracker:
    def __init__(self, dag: Dag, states: Mapping[str, JobStatus]) -> None:
        self.dag = dag
        self._rank = {name: rank for rank, name in enumerate(dag.order)}
        self._job_rank = {job.id: rank for rank, job in enumerate(dag.all_jobs())}
        self._step_of = {job.id: job.step_name for job in dag.all_jobs()}
        self._states = dict(states)  # as recorded (absent: pending)
        self._effective: dict[str, JobStatus] = {}  # with the skips decided applied
        self._skips: dict[str, str] = {}  # job id -> reason, for recorded-pending jobs
        self._outcomes: dict[str, _StepOutcome] = {}
        self._open: set[str] = set()  # steps whose needs are met with a pending job
        self._running = self._failed = self._cancelled = 0
        for name in dag.order:
            self._refresh(name)

    def update(self, changes: Iterable[tuple[str, JobStatus]]) -> None:
        """Jobs now recorded with these statuses."""
        dirty: list[int] = []
        for job_id, status in changes:
            self._states[job_id] = status
            heapq.heappush(dirty, self._rank[self._step_of[job_id]])
        seen: set[int] = set()
        while dirty:
            rank = heapq.heappop(dirty)
            if rank in seen:
                continue
            seen.add(rank)
            name = self.dag.order[rank]
            if self._refresh(name):
                for dependent in self.dag.dependents[name]:
                    heapq.heappush(dirty, self._rank[dependent])

    def plan(self, approved: Collection[str] = ()) -> Plan:
        skips = tuple(
            Skip(job, self._skips[job])
            for job in sorted(self._skips, key=self._job_rank.__getitem__)
        )
        starting: list[StepJob] = []
        awaiting: list[str] = []
        for name in sorted(self._open, key=self._rank.__getitem__):
            step = self.dag.step(name)
            jobs = self.dag.jobs[name]
            if step.when is When.MANUAL and name not in approved:
                awaiting.append(name)
                continue
            pending = [job for job in jobs if self._effective[job.id] is JobStatus.PENDING]
            room = len(jobs)
            if step.matrix is not None and step.matrix.max_parallel is not None:
                busy = sum(1 for job in jobs if self._effective[job.id] is JobStatus.RUNNING)
                room = step.matrix.max_parallel - busy
            starting.extend(pending[: max(room, 0)])
        if self._running or starting:
            status = JobStatus.RUNNING
        elif awaiting:
            status = JobStatus.PENDING
        elif self._cancelled:
            status = JobStatus.CANCELLED
        else:
            status = JobStatus.FAILED if self._failed else JobStatus.SUCCEEDED
        return Plan(skips, tuple(starting), tuple(awaiting), status)

    def _refresh(self, name: str) -> bool:
        """Evaluate step `name` again from its needs' outcomes; True if its outcome changed."""
        step = self.dag.step(name)
        jobs = self.dag.jobs[name]
        reason = _skip_reason(step, self._outcomes)
        pending = False
        for job in jobs:
            status = self._states.get(job.id, JobStatus.PENDING)
            if status is JobStatus.PENDING and reason is not None:
                self._skips[job.id] = reason
                status = JobStatus.SKIPPED
            else:
                self._skips.pop(job.id, None)
            pending |= status is JobStatus.PENDING
            self._set(job.id, status, step.continue_on_error)
        outcome = _outcome(step, jobs, self._effective)
        if pending and _needs_met(step, self._outcomes):
            self._open.add(name)
        else:
            self._open.discard(name)
        changed = self._outcomes.get(name) != outcome
        self._outcomes[name] = outcome
        return changed

    def _set(self, job_id: str, status: JobStatus, forgiven: bool) -> None:
        before = self._effective.get(job_id)
        if before is status:
            return
        self._count(before, forgiven, -1)
        self._count(status, forgiven, 1)
        self._effective[job_id] = status

    def _count(self, status: JobStatus | None, forgiven: bool, delta: int) -> None:
        if status is JobStatus.RUNNING:
            self._running += delta
        elif status is JobStatus.FAILED and not forgiven:
            self._failed += delta
        elif status is JobStatus.CANCELLED:
            self._cancelled += delta
