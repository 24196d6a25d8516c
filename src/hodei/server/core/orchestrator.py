"""Orchestrator: validates and stores jobs, and owns the one path every state change takes
(validate the transition, compare-and-swap in the store, then publish the event)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from typing import Any

from hodei.domain.attempts import Attempt, AttemptState, Failure, ResourceUse, attempt_record
from hodei.domain.jobs import (
    Job,
    JobSpec,
    JobState,
    check_transition,
    new_job_id,
    validate_idempotency_key,
    validate_job_id,
    validate_spec,
)
from hodei.errors import ConflictError, HodeiError, ValidationError
from hodei.ports import JobStore
from hodei.server.core.bus import EventBus, JobChanged
from hodei.server.core.tracing import NO_TRACING, Tracing


class Orchestrator:
    def __init__(
        self,
        store: JobStore,
        bus: EventBus,
        clock: Callable[[], float] = time.time,
        infra_retries: int = 2,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self.store = store
        self.tracing = tracing  # each job's trace starts when it is stored
        self.bus = bus
        self._clock = clock
        # The server's default bound on requeues after platform losses, recorded in the spec
        # of a job submitted without one (so a restart or another server keeps its bound).
        self.infra_retries = infra_retries

    def _with_defaults(self, spec: JobSpec) -> JobSpec:
        if spec.infra_retries is None:
            return replace(spec, infra_retries=self.infra_retries)
        return spec

    async def submit(
        self, spec: JobSpec, job_id: str | None = None, idempotency_key: str | None = None
    ) -> Job:
        job, _ = await self.submit_once(spec, job_id, idempotency_key)
        return job

    async def submit_once(
        self,
        spec: JobSpec,
        job_id: str | None = None,
        idempotency_key: str | None = None,
        *,
        fire: bool = False,
        traceparent: str | None = None,
    ) -> tuple[Job, bool]:
        """Store a new job; returns (job, created). With an idempotency key already used, the
        job created with it comes back (created=False) if it was asked for the same thing, else
        ConflictError: a key names one submission, never two different ones. `fire`: the job
        of a schedule's fire, under the fire's id (a form clients may not use). `traceparent`:
        the caller's W3C trace context, which the job's trace continues."""
        started = time.time_ns() if self.tracing.on else 0
        spec = self._with_defaults(validate_spec(spec))
        if idempotency_key is not None:
            validate_idempotency_key(idempotency_key)
        if job_id:
            validate_job_id(job_id, fire=fire)
        job, created = await self._create(spec, job_id, idempotency_key, check_secrets=True)
        if created and started:
            self.tracing.submitted(job, traceparent, started)
        return job, created

    async def submit_step(self, spec: JobSpec, job_id: str, traceparent: str | None = None) -> Job:
        """Store the job of a pipeline step under the id the engine chose for it (RUN.N.G).
        ConflictError if that job exists: the step was started already. `traceparent`: its
        run's trace context."""
        started = time.time_ns() if self.tracing.on else 0
        spec = self._with_defaults(validate_spec(spec))
        job, _ = await self._create(
            spec, validate_job_id(job_id, step=True), None, check_secrets=True
        )
        if started:
            self.tracing.submitted(job, traceparent, started)
        return job

    async def _check_secrets(self, names: Collection[str]) -> None:
        known = await self.store.get_secrets(names) if names else {}
        missing = sorted(set(names) - set(known))
        if missing:
            raise ValidationError("unknown secret(s): " + ", ".join(missing))

    async def _create(
        self, spec: JobSpec, job_id: str | None, idempotency_key: str | None, check_secrets: bool
    ) -> tuple[Job, bool]:
        """Store a checked spec (its secrets too, unless `check_secrets` is False because the
        caller checked them already)."""
        if idempotency_key is not None:
            earlier = await self.store.job_by_idempotency_key(idempotency_key)
            if earlier is not None:
                return _same_submission(earlier, spec, job_id), False
        if check_secrets:
            await self._check_secrets(spec.secrets)
        job = Job(
            id=job_id or new_job_id(),
            spec=spec,
            created_at=self._clock(),
            idempotency_key=idempotency_key,
        )
        try:
            job = await self.store.create_job(job)
        except ConflictError:
            # Two submits with one key raced: the loser answers with the winner's job.
            if idempotency_key is None:
                raise
            earlier = await self.store.job_by_idempotency_key(idempotency_key)
            if earlier is None:
                raise
            return _same_submission(earlier, spec, job_id), False
        self.bus.publish(JobChanged(job, None))
        return job, True

    async def submit_many(
        self, requests: Sequence[tuple[JobSpec, str | None]], traceparent: str | None = None
    ) -> list[tuple[Job, bool] | HodeiError]:
        """Store many jobs at once (spec, idempotency key), in one group commit. Every spec and
        key is checked first: one invalid request refuses the whole batch (ValidationError
        naming its index) and stores nothing. What can only fail when storing (a key used for
        a different submission) fails alone, in its place in the answer. `traceparent`: the
        caller's trace context, which each new job's trace continues."""
        started = time.time_ns() if self.tracing.on else 0
        names: set[str] = set()
        checked: list[tuple[JobSpec, str | None]] = []
        for index, (spec, key) in enumerate(requests):
            try:
                checked.append((self._with_defaults(validate_spec(spec)), key))
                if key is not None:
                    validate_idempotency_key(key)
            except ValidationError as exc:
                raise ValidationError(f"jobs[{index}]: {exc.message}") from None
            names.update(spec.secrets)
        requests = checked
        await self._check_secrets(names)  # once for the batch, not once per job
        answer: list[tuple[Job, bool] | HodeiError | None] = [None] * len(requests)
        keyed = [(index, key) for index, (_, key) in enumerate(requests) if key is not None]
        found = await asyncio.gather(*(self.store.job_by_idempotency_key(k) for _, k in keyed))
        for (index, _), earlier in zip(keyed, found, strict=True):
            if earlier is not None:
                answer[index] = _known(earlier, requests[index][0])
        todo = [index for index, result in enumerate(answer) if result is None]
        jobs = [
            Job(
                id=new_job_id(),
                spec=requests[index][0],
                created_at=self._clock(),
                idempotency_key=requests[index][1],
            )
            for index in todo
        ]
        # One store operation for the batch (not one per job), in the requests' order.
        stored = await self.store.create_jobs(jobs) if jobs else []
        for index, result in zip(todo, stored, strict=True):
            key = requests[index][1]
            if isinstance(result, Job):
                if started:
                    self.tracing.submitted(result, traceparent, started)
                self.bus.publish(JobChanged(result, None))
                answer[index] = (result, True)
            elif key is not None and (earlier := await self.store.job_by_idempotency_key(key)):
                answer[index] = _known(earlier, requests[index][0])  # the key's first job
            else:
                answer[index] = result
        return [result for result in answer if result is not None]

    async def move(
        self,
        job: Job,
        target: JobState,
        outcome: AttemptState | None = None,
        failure: Failure | None = None,
        usage: ResourceUse | None = None,
        **changes: Any,
    ) -> Job:
        """Move `job` (as last read) to `target`. Raises ConflictError when the transition is
        illegal or the stored state is no longer `job.state` (someone else moved it first).
        The attempt the move starts or ends is recorded with it; `outcome` says how an attempt
        sent back to the queue ended (default: failed), `failure` whose fault an attempt that
        did not succeed was (default: the job's own), `usage` what an ending attempt used."""
        check_transition(job.state, target)
        after = job.with_changes(state=target, **changes)
        attempt = attempt_record(job, after, self._clock(), outcome, failure, usage)
        updated = await self.store.transition(
            job.id, (job.state,), target, changes, attempt, spec=job.spec
        )
        self.bus.publish(JobChanged(updated, job.state, attempt=attempt))
        return updated

    async def finish(self, job: Job, target: JobState, exit_code: int | None, reason: str) -> Job:
        return await self.move(
            job, target, exit_code=exit_code, reason=reason, finished_at=self._clock()
        )

    async def requeue(self, job: Job, reason: str = "", outcome: AttemptState | None = None) -> Job:
        """Back to the queue for a new attempt (retry); the attempt counter is kept."""
        return await self.move(
            job,
            JobState.QUEUED,
            outcome,
            exit_code=None,
            reason=reason,
            worker_id=None,
            started_at=None,
            finished_at=None,
            not_before=None,
        )

    async def dispatch_lost(
        self, job: Job, worker_id: str, failure: Failure, **changes: Any
    ) -> Job:
        """A queued job whose dispatch could not be recorded (its `assigned` write failed)
        stays queued, with the attempt it was given recorded as lost (`failure`) and `changes`
        applied (the counters, the reason, a backoff). Compare-and-swap on `queued`, then
        JobChanged: the scheduler queues it again."""
        if job.state is not JobState.QUEUED:
            raise ConflictError(f"job {job.id} is {job.state}, not queued")
        number = job.attempts + 1
        now = self._clock()
        changes = {"attempts": number, **changes}
        attempt = Attempt(
            job.id,
            number,
            AttemptState.FAILED,
            worker_id,
            assigned_at=now,
            finished_at=now,
            reason=str(changes.get("reason", "")),
            failure=failure,
        )
        updated = await self.store.transition(
            job.id, (JobState.QUEUED,), JobState.QUEUED, changes, attempt, spec=job.spec
        )
        self.bus.publish(JobChanged(updated, JobState.QUEUED, attempt=attempt))
        return updated

    def now(self) -> float:
        return self._clock()


def _known(earlier: Job, spec: JobSpec) -> tuple[Job, bool] | HodeiError:
    """A batch's answer for a key already used: its job, or why it cannot be reused."""
    try:
        return _same_submission(earlier, spec, None), False
    except ConflictError as exc:
        return exc


def _same_submission(earlier: Job, spec: JobSpec, job_id: str | None) -> Job:
    # Who queued it is not part of what was asked for.
    if replace(spec, queued_by=earlier.spec.queued_by) != earlier.spec or (
        job_id is not None and job_id != earlier.id
    ):
        raise ConflictError(
            f"idempotency key already used by job {earlier.id} for a different submission"
        )
    return earlier
