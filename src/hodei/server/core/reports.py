"""What agents report on the attempts they hold: log output, starts and results.

A report is applied only once its attempt's `assigned` write has committed (see dispatch.py:
the assignment leaves before it); reports on attempts a worker does not hold are refused and
audited. The end of an attempt is settled by the retry policy, or the job queued again when
its worker never ran it.

The retry policy tells the job's own failures (its exit code: spends `max_retries`, with
backoff) from attempts lost to the platform (its worker or server gone: queued again at once,
within `infra_retries`, spending no `max_retries`; never for a job with `no_infra_retry`). An
attempt its worker never started spends neither. The counters are kept on the job, so no
store read is needed to apply a result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from hodei.domain.attempts import AttemptState, Failure, ResourceUse
from hodei.domain.jobs import Job, JobState
from hodei.domain.scheduling import release
from hodei.domain.work import AGENT_FAILED, NOT_RUN, LogReport, ResultReport, StartReport
from hodei.errors import ConflictError, HodeiError
from hodei.server.core.background import Background
from hodei.server.core.loghub import LogHub
from hodei.server.core.orchestrator import Orchestrator
from hodei.server.core.passes import PassSignal
from hodei.server.core.tracing import NO_TRACING, Tracing
from hodei.server.core.workers import HeldJob, WorkerSession, assignment_stored
from hodei.server.security.audit import Auditor

log = logging.getLogger(__name__)


class Reports:
    def __init__(
        self,
        orchestrator: Orchestrator,
        hub: LogHub,
        passes: PassSignal,
        background: Background,
        auditor: Auditor | None = None,
        retry_backoff_s: float = 1.0,
        infra_retries: int = 2,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self.orch = orchestrator
        self.tracing = tracing  # a result span in the attempt's trace
        self.hub = hub
        self.passes = passes  # kicked when a slot is freed: the scheduler passes again
        self.background = background
        self.auditor = auditor  # records reports refused (on jobs a worker does not hold)
        self.retry_backoff_s = retry_backoff_s
        self._store_down = False  # a report could not be stored (said once, until one is)
        # The bound for a job whose spec records none (submitted before the bound existed).
        self.infra_retries = infra_retries

    def store_logs(self, session: WorkerSession, chunks: Iterable[LogReport]) -> None:
        """Store log chunks of jobs this worker holds and ack them. Chunks of an attempt whose
        `assigned` write has not committed yet wait in its HeldJob (in order) until it has;
        they are dropped if it fails (the attempt never existed)."""
        if session.store_blocked:
            return  # unacked: the agent keeps them and sends them again after the restart
        acked: dict[tuple[str, int], int] = {}
        foreign: set[tuple[str, int]] = set()
        for chunk in chunks:
            held = session.jobs.get(chunk.job_id)
            if held is None or held.attempt != chunk.attempt:
                foreign.add((chunk.job_id, chunk.attempt))
                continue  # not this worker's job (or a stale attempt): never stored
            if held.early_logs or (held.committed is not None and not held.committed.done()):
                held.early_logs.append(chunk)
                continue
            try:
                self.hub.append(
                    chunk.job_id, chunk.attempt, chunk.sequence, chunk.offset, chunk.data
                )
            except HodeiError as exc:
                # Unacked, and nothing after it is stored (no gap): the agent keeps the bytes.
                self.store_failed(session, exc)
                break
            acked[(chunk.job_id, chunk.attempt)] = self.hub.last_seq(chunk.job_id, chunk.attempt)
        if acked:
            self._stored(session)
        for (job_id, attempt), seq in acked.items():
            session.channel.ack_log(job_id, attempt, seq)
        for job_id, attempt in foreign:
            self._refused(session, job_id, f"log of attempt {attempt}")

    def _refused(self, session: WorkerSession, job_id: str, what: str) -> None:
        """An agent reported on a job it does not hold (stale, or not its own): audited."""
        if self.auditor is not None:
            detail = f"{what}: not held by this worker"
            self.background.spawn(
                self.auditor.denied(f"worker:{session.id}", "worker.report_refused", job_id, detail)
            )

    async def on_started(
        self, session: WorkerSession, update: StartReport, with_result: bool = False
    ) -> None:
        """`with_result`: the attempt's result came in the same message; the start is then
        stored with it, in one write instead of two."""
        held = session.jobs.get(update.job_id)
        if held is None or held.attempt != update.attempt:
            return
        started_at = self.orch.now()  # when the report came, not when it could be stored
        if with_result:
            if held.started_at is None:
                held.started_at = started_at
            return
        if not await assignment_stored(held) or session.jobs.get(update.job_id) is not held:
            return
        if held.job.state is JobState.ASSIGNED:
            try:
                held.job = await self.orch.move(
                    held.job, JobState.RUNNING, started_at=started_at, reason=""
                )
            except ConflictError as exc:
                log.warning("start of %s refused: %s", held.job.id, exc)
            except HodeiError as exc:  # not stored: the result will carry the job on
                self.store_failed(session, exc)

    async def on_result(self, session: WorkerSession, result: ResultReport) -> None:
        held = session.jobs.get(result.job_id)
        if (
            held is not None
            and held.attempt == result.attempt
            and (not await assignment_stored(held) or session.jobs.get(result.job_id) is not held)
        ):
            held = None  # its `assigned` write failed: the attempt never existed
        if held is None or held.attempt != result.attempt:
            reason = "job not held by this worker"
            session.channel.ack_result(result.job_id, result.attempt, False, reason)
            self._refused(session, result.job_id, f"result of attempt {result.attempt}")
            return
        if session.store_blocked:
            return  # unacked: the agent sends it again after the restart
        del session.jobs[result.job_id]
        applied = self.tracing.result(result.job_id, result.attempt)
        try:
            await self._apply_result(held, result)
        except HodeiError as exc:  # not stored (the store failed): still held, not acked
            session.jobs[result.job_id] = held
            self.store_failed(session, exc)
            applied(f"not stored: {exc.message}")
            return
        self._stored(session)
        applied("not run" if result.exit_code == NOT_RUN else describe(result) or "exit 0")
        session.channel.ack_result(result.job_id, result.attempt, True)
        if result.exit_code == NOT_RUN and not held.cancel_sent:
            # The agent refused the job unasked: it is shutting down (a SIGTERM, say, as a
            # pod's deletion sends). Place nothing more on it, or the job would bounce back
            # to it, attempt after attempt, until it is gone.
            session.view.accepting = False
        self._freed(session, held)

    async def _apply_result(self, held: HeldJob, result: ResultReport) -> None:
        if result.exit_code == NOT_RUN and not held.cancel_sent:
            await self._requeue_unrun(held, result.error)
        elif result.exit_code == AGENT_FAILED:
            why = f"the agent of worker {held.job.worker_id} failed to run it: {result.error}"
            target = JobState.CANCELLED if held.cancel_sent else JobState.FAILED
            await self._settle(held, target, None, why, Failure.AGENT, usage_of(result))
        else:
            reason = describe(result, held.cancel_sent)
            if self.hub.last_seq(held.job_id, held.attempt) < result.last_sequence:
                reason = f"{reason} (log incomplete: the server could not store all of it)"
            failure = Failure.JOB
            if result.cancelled and not held.cancel_sent:
                failure = Failure.WORKER_LOST  # the agent stopped it on its own (host going)
            target = result_target(result, held)
            await self._settle(held, target, result.exit_code, reason, failure, usage_of(result))

    # ---- a store that cannot write ----------------------------------------------------------
    def store_failed(self, session: WorkerSession, exc: HodeiError) -> None:
        """A report of `session` could not be stored: refuse its others (they stay unacked, the
        agent keeps them, memory bounded by its backpressure) and restart its stream after a
        growing wait, so the agent sends them all again, in order, until the store takes them."""
        if not self._store_down:
            self._store_down = True
            log.error(
                "the store cannot record reports (%s); agents keep their output and results "
                "until it can",
                exc.message,
            )
        if session.store_blocked:
            return
        session.store_blocked = True
        session.store_retry_s = min(30.0, max(1.0, session.store_retry_s * 2))
        self.background.spawn(self._restart_later(session, session.store_retry_s))

    async def _restart_later(self, session: WorkerSession, delay: float) -> None:
        await asyncio.sleep(delay)
        session.store_blocked = False
        session.channel.restart("the server could not store some reports: send them again")

    def _stored(self, session: WorkerSession) -> None:
        session.store_retry_s = 0.0
        if self._store_down:
            self._store_down = False
            log.info("the store records reports again")

    async def requeue_unrun(self, session: WorkerSession, held: HeldJob, why: str) -> None:
        """An attempt its worker never got (lost in a dropped stream): queue the job again."""
        await self._requeue_unrun(held, why)
        self._freed(session, held)

    async def settle_lost(self, job: Job, why: str, failure: Failure) -> None:
        """An attempt no worker holds any more (after a restart, or its server is gone): lost
        to the platform (`failure`), the retry policy decides."""
        held = HeldJob(job.id, job.attempts, job)
        await self._settle(held, JobState.FAILED, None, why, failure)

    async def lose(self, session: WorkerSession, held: HeldJob, why: str = "") -> None:
        """`held` will get no more reports (its worker is gone; `why`, if its provider said)."""
        if held.cancel_sent:
            await self._settle(held, JobState.CANCELLED, None, "cancelled (worker gone)")
        else:
            lost = f"worker {session.id} lost" + (f" ({why})" if why else "")
            await self._settle(held, JobState.FAILED, None, lost, Failure.WORKER_LOST)
        release(session.view, held.job.spec)

    async def _requeue_unrun(self, held: HeldJob, error: str) -> None:
        """The agent never started this attempt (e.g. it was shutting down): queue it again."""
        try:
            if not await assignment_stored(held):
                return  # the attempt was never recorded: the job is where it was
            await self.orch.requeue(
                held.job, reason=f"not run by its worker: {error}", outcome=AttemptState.NOT_RUN
            )
        except ConflictError as exc:
            log.warning("could not requeue %s: %s", held.job_id, exc)
        # Not sealed when the store failed (the error goes on): the attempt is not over yet.
        self.hub.seal(held.job_id, held.attempt)

    def _freed(self, session: WorkerSession, held: HeldJob) -> None:
        release(session.view, held.job.spec)
        if not session.jobs:
            session.last_busy = time.monotonic()
        self.passes.kick()

    async def _settle(
        self,
        held: HeldJob,
        target: JobState,
        exit_code: int | None,
        reason: str,
        failure: Failure = Failure.JOB,
        usage: ResourceUse | None = None,
    ) -> None:
        """Record the end of an attempt: retry it when the policy allows, else finish the job.
        `failure` says whose fault an attempt that did not succeed was; `usage` what it used,
        as its agent measured it."""
        job = held.job
        try:
            if not await assignment_stored(held):
                return  # the attempt was never recorded: nothing to settle
            started: dict[str, Any] = {}
            if held.started_at is not None and job.state is JobState.ASSIGNED:
                started["started_at"] = held.started_at  # reported with the result
            retry: dict[str, Any] | None = None
            if target is JobState.FAILED and failure.platform:
                retry, reason = self.platform_retry(job, reason)
            elif target is JobState.FAILED and job.retries_used < job.spec.max_retries:
                delay = retry_delay(self.retry_backoff_s, job.retries_used + 1)
                retry = {
                    "retries_used": job.retries_used + 1,
                    "not_before": self.orch.now() + delay,
                    "reason": f"attempt {job.attempts} {reason}; retrying in {delay:g}s",
                }
            if retry is not None:
                await self.orch.move(
                    job,
                    JobState.QUEUED,
                    failure=failure,
                    usage=usage,
                    exit_code=exit_code,
                    worker_id=None,
                    **retry,
                    **started,
                )
            else:
                await self.orch.move(
                    job,
                    target,
                    failure=failure,
                    usage=usage,
                    exit_code=exit_code,
                    reason=reason,
                    finished_at=self.orch.now(),
                    **started,
                )
        except ConflictError as exc:
            log.warning("result of %s attempt %d not applied: %s", job.id, held.attempt, exc)
        # Sealing wakes log followers, who then read the job: only once its new state is
        # stored (a store with concurrent connections could serve them the old one first); not
        # when the store failed (the error goes on): the attempt is not over yet.
        self.hub.seal(job.id, held.attempt)

    def platform_retry(
        self, job: Job, reason: str, backoff: bool = False
    ) -> tuple[dict[str, Any] | None, str]:
        """After attempt `job.attempts` was lost to the platform (`reason`): the changes that
        queue the job again within its infra_retries (with a backoff if `backoff`), or None
        and the reason it fails with."""
        bound = job.spec.infra_retries
        bound = self.infra_retries if bound is None else bound
        if job.spec.no_infra_retry:
            return None, f"{reason}; not run again: the job is marked no_infra_retry"
        if job.infra_retries_used >= bound:
            return None, (
                f"{reason}; the platform gave up after {job.infra_retries_used} "
                f"automatic requeue(s) (infra_retries {bound})"
            )
        used = job.infra_retries_used + 1
        changes: dict[str, Any] = {"infra_retries_used": used, "not_before": None}
        text = f"attempt {job.attempts} {reason}; queued again (platform fault {used} of {bound})"
        if backoff:
            delay = retry_delay(self.retry_backoff_s, used)
            changes["not_before"] = self.orch.now() + delay
            text = f"{text} in {delay:g}s"
        changes["reason"] = text
        return changes, text


def retry_delay(base_s: float, retry: int) -> float:
    """Exponential backoff before retry number `retry`: base, 2*base, 4*base... (<= 5 min)."""
    return min(300.0, base_s * 2.0 ** max(0, retry - 1))


def usage_of(result: ResultReport) -> ResourceUse | None:
    """What the attempt used, when its agent measured it."""
    if not result.has_usage:
        return None
    io = result.has_io
    return ResourceUse(
        result.cpu_seconds,
        result.peak_memory_bytes,
        result.read_bytes if io else None,
        result.written_bytes if io else None,
    )


def result_target(result: ResultReport, held: HeldJob) -> JobState:
    if held.cancel_sent and (result.cancelled or result.signal):
        return JobState.CANCELLED
    if (
        result.cancelled
    ):  # the agent stopped on its own (e.g. its host shut down): not a user cancel
        return JobState.FAILED
    if result.timed_out:
        return JobState.TIMED_OUT
    return JobState.SUCCEEDED if result.exit_code == 0 and not result.error else JobState.FAILED


def describe(result: ResultReport, held_cancelled: bool = True) -> str:
    if result.error:
        return result.error
    if result.cancelled:
        return "cancelled by user" if held_cancelled else "stopped with its worker"
    if result.timed_out:
        return "timed out"
    if result.signal:
        return f"killed by signal {result.signal}"
    return f"exited with code {result.exit_code}" if result.exit_code else ""
