"""Dispatch: hand a placed job to the worker whose slot the scheduler reserved for it.

The assignment leaves before its `assigned` write commits (after it when several servers
share the store); HeldJob.committed says how that write went. If it fails, the assignment is
taken back before it leaves or a cancel follows, and the slot is freed; a store failure is a
platform fault (the job is queued again within its infra_retries).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from hodei.domain.attempts import Failure
from hodei.domain.jobs import Job, JobState
from hodei.domain.scheduling import release
from hodei.domain.work import assignment_of
from hodei.errors import ConflictError, HodeiError
from hodei.server.core.background import Background
from hodei.server.core.orchestrator import Orchestrator
from hodei.server.core.passes import PassSignal
from hodei.server.core.reports import Reports
from hodei.server.core.tracing import NO_TRACING, Tracing
from hodei.server.core.workers import HeldJob, WorkerSession
from hodei.server.security.audit import Auditor
from hodei.server.security.vault import SecretVault

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(
        self,
        orchestrator: Orchestrator,
        vault: SecretVault,
        reports: Reports,
        passes: PassSignal,
        background: Background,
        auditor: Auditor | None = None,
        send_before_commit: bool = True,
        max_output_bytes: int = 0,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self.orch = orchestrator
        self.tracing = tracing  # the dispatch's span; the assignment carries the attempt's
        self.vault = vault
        self.reports = reports  # told of the early logs and of an attempt never sent
        self.passes = passes  # kicked when a reserved slot is freed: the scheduler passes again
        self.background = background
        self.auditor = auditor  # records which job got which secrets
        # Several servers on one store store an assignment before sending it (False), since
        # another server may be placing the same queued job at the same moment.
        self.send_before_commit = send_before_commit
        self.max_output_bytes = max_output_bytes  # per attempt (0: the agent's default)

    async def dispatch(self, job: Job, session: WorkerSession) -> None:
        try:
            secrets = await self.vault.values(job.spec.secrets)
        except HodeiError as exc:  # e.g. a secret deleted after submit
            release(session.view, job.spec)
            await self._fail_quietly(job, f"cannot dispatch: {exc.message}")
            self.passes.kick()
            return
        if job.spec.secrets and self.auditor is not None:
            used = self.auditor.record(
                f"worker:{session.id}",
                "secret.use",
                ",".join(job.spec.secrets),
                f"job {job.id} attempt {job.attempts + 1}",
            )
            self.background.spawn(used)  # off the dispatch path: the trail must not slow a start
        # The reason a requeued job gave (the last attempt's loss) is that attempt's, kept in
        # its record: the new attempt starts with none.
        changes: dict[str, Any] = {
            "worker_id": session.id,
            "attempts": job.attempts + 1,
            "reason": "",
        }
        assigned = job.with_changes(state=JobState.ASSIGNED, **changes)
        traceparent = self.tracing.dispatching(job, session.id)
        held = HeldJob(job.id, assigned.attempts, assigned, traceparent=traceparent)
        held.committed = asyncio.get_running_loop().create_future()
        session.jobs[job.id] = held
        # The assignment leaves at once, before the `assigned` write commits: the agent starts
        # while the store syncs (one commit fewer between submit and start). What it reports
        # is applied only once the write has committed (assignment_stored); if the server
        # dies first, the job is still queued in the store and Recovery.adopt tells the agent
        # to drop its attempt: the job runs again (at least once, as promised).
        sent = not session.closed and self.send_before_commit
        if sent and not await self._send(session, held, job, secrets):
            return
        try:
            held.job = await self.orch.move(job, JobState.ASSIGNED, **changes)
        except HodeiError as exc:  # ConflictError: cancelled meanwhile
            self.tracing.dispatched(job.id, exc.message)
            held.committed.set_result(False)
            if session.jobs.get(job.id) is held:  # else whoever took it freed its slot
                del session.jobs[job.id]
                if sent and not session.channel.unassign(job.id, held.attempt):
                    session.drop_attempt(
                        job.id, held.attempt, "this attempt was not recorded (the job moved on)"
                    )
                release(session.view, job.spec)
            if not isinstance(exc, ConflictError):
                await self._store_failed(job, session.id, exc.message)
            self.passes.kick()
            return
        held.committed.set_result(True)
        self.tracing.dispatched(job.id)
        if not self.send_before_commit and not session.closed and session.jobs.get(job.id) is held:
            if not await self._send(session, held, held.job, secrets):
                return
            sent = True
        if held.early_logs:  # before anything waiting on `committed` resumes
            early, held.early_logs = held.early_logs, []
            self.reports.store_logs(session, early)
        if not sent and session.jobs.get(job.id) is held:  # its stream closed meanwhile
            unsent = session.jobs.pop(job.id)
            await self.reports.requeue_unrun(session, unsent, "its worker's stream closed first")

    async def _send(
        self, session: WorkerSession, held: HeldJob, job: Job, secrets: dict[str, str]
    ) -> bool:
        """Hand the attempt to the worker's channel. A spec the wire cannot carry (a bug that
        let a bad value through) fails the job with the reason, and frees the slot it held:
        it must never leave the job queued and the slot taken for good."""
        try:
            assignment = assignment_of(
                held.job, secrets, self.max_output_bytes, traceparent=held.traceparent
            )
            session.channel.assign(assignment)
            return True
        except (TypeError, ValueError, OverflowError) as exc:
            log.error("job %s could not be sent to worker %s: %s", job.id, session.id, exc)
            if session.jobs.get(job.id) is held:
                del session.jobs[job.id]
                release(session.view, job.spec)
            if held.committed is not None and not held.committed.done():
                held.committed.set_result(False)
            await self._fail_quietly(job, f"cannot dispatch: its assignment is not valid ({exc})")
            self.passes.kick()
            return False

    async def _store_failed(self, job: Job, worker_id: str, error: str) -> None:
        """The `assigned` write failed (the job is still queued in the store): a platform
        fault. Queued again after a backoff within its infra_retries, else failed."""
        reason = f"could not be dispatched: {error}"
        retry, reason = self.reports.platform_retry(
            job.with_changes(attempts=job.attempts + 1), reason, backoff=True
        )
        if retry is None:
            await self._fail_quietly(job, reason)
            return
        try:
            await self.orch.dispatch_lost(job, worker_id, Failure.STORE, **retry)
        except HodeiError as exc:
            log.warning("job %s could not be queued again: %s", job.id, exc.message)

    async def _fail_quietly(self, job: Job, reason: str) -> None:
        try:
            await self.orch.finish(job, JobState.FAILED, None, reason)
        except HodeiError:
            log.info("job %s moved on before it could be failed: %s", job.id, reason)
