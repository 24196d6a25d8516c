"""Dispatch: hand a placed job to the worker whose slot the scheduler reserved for it.

The assignment leaves before its `assigned` write commits (after it when several servers
share the store); HeldJob.committed says how that write went. If it fails, the assignment is
taken back out of the outbox or a CancelJob follows, and the slot is freed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from hodei._proto.hodei.v1 import worker_pb2 as pb
from hodei.domain.jobs import Job, JobState
from hodei.domain.scheduling import release
from hodei.errors import ConflictError, HodeiError
from hodei.server.core.orchestrator import Orchestrator
from hodei.server.core.reports import Reports, Spawn
from hodei.server.core.workers import HeldJob, WorkerSession
from hodei.server.security.audit import Auditor

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(
        self,
        orchestrator: Orchestrator,
        reports: Reports,
        kick: Callable[[], None],
        spawn: Spawn,
    ) -> None:
        self.orch = orchestrator
        self.reports = reports  # told of the early logs and of an attempt never sent
        self.kick = kick  # a reserved slot was freed: the scheduler passes again
        self.spawn = spawn
        self.auditor: Auditor | None = None  # records which job got which secrets
        # Several servers on one store store an assignment before sending it, since another
        # server may be placing the same queued job at the same moment.
        self.send_before_commit = True
        self.max_output_bytes = 0  # per attempt, told to agents (0: the agent's default)

    async def dispatch(self, job: Job, session: WorkerSession) -> None:
        try:
            secrets = await self.orch.vault.values(job.spec.secrets)
        except HodeiError as exc:  # e.g. a secret deleted after submit
            release(session.view, job.spec)
            await self._fail_quietly(job, f"cannot dispatch: {exc.message}")
            self.kick()
            return
        if job.spec.secrets and self.auditor is not None:
            used = self.auditor.record(
                f"worker:{session.id}",
                "secret.use",
                ",".join(job.spec.secrets),
                f"job {job.id} attempt {job.attempts + 1}",
            )
            self.spawn(used)  # off the dispatch path: the trail must not slow a start
        changes: dict[str, Any] = {"worker_id": session.id, "attempts": job.attempts + 1}
        assigned = job.with_changes(state=JobState.ASSIGNED, **changes)
        held = HeldJob(job.id, assigned.attempts, assigned)
        held.committed = asyncio.get_running_loop().create_future()
        session.jobs[job.id] = held
        # The assignment leaves at once, before the `assigned` write commits: the agent starts
        # while the store syncs (one commit fewer between submit and start). What it reports
        # is applied only once the write has committed (assignment_stored); if the server
        # dies first, the job is still queued in the store and Recovery.adopt tells the agent
        # to drop its attempt: the job runs again (at least once, as promised).
        sent = not session.closed and self.send_before_commit
        if sent:
            session.send_assign(assign_message(assigned, secrets, self.max_output_bytes))
        try:
            held.job = await self.orch.move(job, JobState.ASSIGNED, **changes)
        except HodeiError as exc:  # ConflictError: cancelled meanwhile
            held.committed.set_result(False)
            if session.jobs.get(job.id) is held:  # else whoever took it freed its slot
                del session.jobs[job.id]
                if sent and not session.unsend_assign(job.id, held.attempt):
                    session.send_cancel(
                        pb.CancelJob(
                            job_id=job.id,
                            attempt=held.attempt,
                            grace_ms=0,
                            reason="this attempt was not recorded (the job moved on)",
                        )
                    )
                release(session.view, job.spec)
            if not isinstance(exc, ConflictError):
                await self._fail_quietly(job, f"cannot dispatch: {exc.message}")
            self.kick()
            return
        held.committed.set_result(True)
        if not self.send_before_commit and not session.closed and session.jobs.get(job.id) is held:
            session.send_assign(assign_message(held.job, secrets, self.max_output_bytes))
            sent = True
        if held.early_logs:  # before anything waiting on `committed` resumes
            early, held.early_logs = held.early_logs, []
            self.reports.store_logs(session, early)
        if not sent and session.jobs.get(job.id) is held:
            await self.reports.lose(session, session.jobs.pop(job.id))

    async def _fail_quietly(self, job: Job, reason: str) -> None:
        try:
            await self.orch.finish(job, JobState.FAILED, None, reason)
        except HodeiError:
            log.info("job %s moved on before it could be failed: %s", job.id, reason)


def assign_message(job: Job, secrets: dict[str, str], max_output_bytes: int = 0) -> pb.AssignJob:
    spec = job.spec
    return pb.AssignJob(
        job_id=job.id,
        attempt=job.attempts,
        name=spec.name,
        command=spec.command,
        arguments=list(spec.arguments),
        environment=spec.env,
        secrets=secrets,
        resources={"cpu": spec.cpu, "memory_bytes": spec.memory_bytes},
        timeout_ms=int(spec.timeout_s * 1000),
        max_output_bytes=max_output_bytes,
    )
