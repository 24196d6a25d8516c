"""Attempts: one record per dispatch of a job, with its own worker, exit code and outcome.

The job row says where the job is now; its attempts say what happened each time it ran (a job
failing twice then succeeding has three). The record is derived here, purely, from the job
before and after a state change, and the store writes it in the same transaction as the change.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hodei.domain.jobs import ACTIVE, Job, JobState


class AttemptState(StrEnum):
    ASSIGNED = "assigned"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    NOT_RUN = "not_run"  # dispatched, but its worker never started it (queued again)

    @property
    def over(self) -> bool:
        return self not in (AttemptState.ASSIGNED, AttemptState.RUNNING)


class Failure(StrEnum):
    """Why an attempt did not succeed: the job's own doing, or the platform's."""

    JOB = "job"  # its exit code, its timeout, its cancel: spends the job's max_retries
    NOT_RUN = "not_run"  # its worker never started it: queued again, spends no bound
    WORKER_LOST = "worker_lost"  # its worker went away (or stopped it on its own)
    SERVER_RESTART = "server_restart"  # the server restarted and its worker did not come back
    SERVER_LOST = "server_lost"  # the server holding its worker stopped answering
    STORE = "store"  # the store could not record its dispatch
    AGENT = "agent"  # its worker's agent failed while running it (not the job's doing)

    @property
    def platform(self) -> bool:
        """Lost to the platform: queued again within the job's infra_retries."""
        return self not in (Failure.JOB, Failure.NOT_RUN)


@dataclass(frozen=True, slots=True)
class ResourceUse:
    """What one attempt used, as its agent measured it: CPU seconds (user + system), the peak
    of its memory (RSS, or its cgroup's high-water mark), and bytes read and written (None
    when they could not be read there)."""

    cpu_seconds: float
    peak_memory_bytes: int
    read_bytes: int | None = None
    written_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """Fields left None keep what the store holds (a RUNNING record keeps its assigned_at)."""

    job_id: str
    number: int
    state: AttemptState
    worker_id: str | None = None
    exit_code: int | None = None
    assigned_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    reason: str = ""
    failure: Failure | None = None  # set once it ended other than succeeded
    # What it used (ResourceUse), once it ended on a worker that measured it; None otherwise.
    cpu_seconds: float | None = None
    peak_memory_bytes: int | None = None
    read_bytes: int | None = None
    written_bytes: int | None = None

    @property
    def usage(self) -> ResourceUse | None:
        if self.cpu_seconds is None or self.peak_memory_bytes is None:
            return None
        return ResourceUse(
            self.cpu_seconds, self.peak_memory_bytes, self.read_bytes, self.written_bytes
        )


def attempt_record(
    before: Job,
    after: Job,
    now: float,
    outcome: AttemptState | None = None,
    failure: Failure | None = None,
    usage: ResourceUse | None = None,
) -> Attempt | None:
    """The attempt record a move from `before` to `after` writes, if any. `outcome` names how
    an attempt that goes back to the queue ended (default: failed, to be retried); `failure`
    whose fault that was (default: the job's own, or not_run for an attempt never started);
    `usage` what an attempt that ended used, when its agent measured it."""
    if after.state is JobState.ASSIGNED and before.state is JobState.QUEUED:
        return Attempt(
            after.id, after.attempts, AttemptState.ASSIGNED, after.worker_id, assigned_at=now
        )
    if after.state is JobState.RUNNING:
        return Attempt(
            after.id,
            after.attempts,
            AttemptState.RUNNING,
            after.worker_id,
            started_at=after.started_at,
        )
    if before.state not in ACTIVE or before.attempts < 1:
        return None
    if after.state is JobState.QUEUED:
        state = outcome or AttemptState.FAILED
    else:
        state = outcome or AttemptState(after.state.value)
    if state is AttemptState.SUCCEEDED:
        failure = None
    elif failure is None:
        failure = Failure.NOT_RUN if state is AttemptState.NOT_RUN else Failure.JOB
    return Attempt(
        before.id,
        before.attempts,
        state,
        before.worker_id,
        exit_code=after.exit_code,
        started_at=before.started_at,
        finished_at=now,
        reason=after.reason,
        failure=failure,
        cpu_seconds=usage.cpu_seconds if usage else None,
        peak_memory_bytes=usage.peak_memory_bytes if usage else None,
        read_bytes=usage.read_bytes if usage else None,
        written_bytes=usage.written_bytes if usage else None,
    )
