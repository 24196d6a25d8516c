"""What users do to jobs that exist: cancel and retry (both APIs share these through
service.JobsApi).

A queued job is cancelled in the store at once; a running one is asked to stop on its worker
and ends when the worker reports (the attempt's end is recorded by reports.Reports). A job
whose worker is not connected here is cancelled in the store, and servers sharing it hear of it
(CancelElsewhere) so the one holding the worker stops it there.
"""

from __future__ import annotations

from hodei.domain.jobs import Job, JobState
from hodei.domain.pipelines.runs import parse_step_job_id
from hodei.errors import ConflictError
from hodei.ports import JobStore
from hodei.server.core.bus import CancelElsewhere, EventBus
from hodei.server.core.orchestrator import Orchestrator
from hodei.server.core.workers import HeldJob, WorkerRegistry, WorkerSession

USER_CANCEL = "cancelled by user"


class JobControl:
    def __init__(
        self,
        orchestrator: Orchestrator,
        store: JobStore,
        registry: WorkerRegistry,
        bus: EventBus,
        cancel_grace_s: float = 5.0,
    ) -> None:
        self.orch = orchestrator
        self.store = store
        self.registry = registry
        self.bus = bus
        self.cancel_grace_ms = int(cancel_grace_s * 1000)

    async def cancel(self, job_id: str) -> Job:
        for _ in range(5):
            job = await self.store.get_job(job_id)
            if job.state.terminal:
                raise ConflictError(f"job {job_id} already ended ({job.state})")
            try:
                return await self._cancel(job)
            except ConflictError:
                continue  # it moved while we looked: look again
        raise ConflictError(f"job {job_id} keeps changing state; try again")

    async def _cancel(self, job: Job) -> Job:
        if job.state is JobState.QUEUED:
            return await self.orch.finish(job, JobState.CANCELLED, None, USER_CANCEL)
        found = self.registry.held(job.id, job.worker_id)
        if found is None:
            if job.worker_id:
                self.bus.publish(CancelElsewhere(job.id))  # its worker may be another server's
            return await self.orch.finish(job, JobState.CANCELLED, None, USER_CANCEL)
        session, held = found
        self.stop_held(session, held)
        return held.job

    def stop_held(self, session: WorkerSession, held: HeldJob, again: bool = False) -> None:
        """Ask `held`'s worker to end it, as a user cancel does (`again`: send it once more,
        the first may have died with a dropped stream)."""
        if again:
            session.cancel_again(held, self.cancel_grace_ms, USER_CANCEL)
        else:
            session.cancel(held, self.cancel_grace_ms, USER_CANCEL)

    async def retry(self, job_id: str) -> Job:
        job = await self.store.get_job(job_id)
        step = parse_step_job_id(job.id)
        if step is not None:
            # Its run recorded how it ended; running it again behind the run's back would not
            # change the run (and could hand different files to steps already done).
            raise ConflictError(
                f"job {job_id} is a step of pipeline run {step[0]}: "
                f"retry the run (hodei pipeline retry {step[0]})"
            )
        if not job.state.terminal:
            raise ConflictError(f"job {job_id} is {job.state}; only a finished job can be retried")
        return await self.orch.requeue(job, reason=f"retry of attempt {job.attempts}")
