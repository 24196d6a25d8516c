"""Orchestrator: validates and stores jobs, and owns the one path every state change takes
(validate the transition, compare-and-swap in the store, then publish the event)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hodei.domain.jobs import (
    Job,
    JobSpec,
    JobState,
    check_transition,
    new_job_id,
    validate_job_id,
    validate_spec,
)
from hodei.errors import ValidationError
from hodei.ports import JobStore
from hodei.server.bus import EventBus, JobChanged
from hodei.server.vault import SecretVault


class Orchestrator:
    def __init__(
        self,
        store: JobStore,
        bus: EventBus,
        vault: SecretVault,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.bus = bus
        self.vault = vault
        self._clock = clock

    async def submit(self, spec: JobSpec, job_id: str | None = None) -> Job:
        validate_spec(spec)
        if spec.secrets:
            known = await self.store.get_secrets(spec.secrets)
            missing = [n for n in spec.secrets if n not in known]
            if missing:
                raise ValidationError("unknown secret(s): " + ", ".join(missing))
        job = Job(
            id=validate_job_id(job_id) if job_id else new_job_id(),
            spec=spec,
            created_at=self._clock(),
        )
        job = await self.store.create_job(job)
        self.bus.publish(JobChanged(job, None))
        return job

    async def move(self, job: Job, target: JobState, **changes: Any) -> Job:
        """Move `job` (as last read) to `target`. Raises ConflictError when the transition is
        illegal or the stored state is no longer `job.state` (someone else moved it first)."""
        check_transition(job.state, target)
        updated = await self.store.transition(job.id, (job.state,), target, changes)
        self.bus.publish(JobChanged(updated, job.state))
        return updated

    async def finish(self, job: Job, target: JobState, exit_code: int | None, reason: str) -> Job:
        return await self.move(
            job, target, exit_code=exit_code, reason=reason, finished_at=self._clock()
        )

    async def requeue(self, job: Job, reason: str = "") -> Job:
        """Back to the queue for a new attempt (retry); the attempt counter is kept."""
        return await self.move(
            job,
            JobState.QUEUED,
            exit_code=None,
            reason=reason,
            worker_id=None,
            started_at=None,
            finished_at=None,
        )

    def now(self) -> float:
        return self._clock()
