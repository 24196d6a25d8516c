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


def attempt_record(
    before: Job, after: Job, now: float, outcome: AttemptState | None = None
) -> Attempt | None:
    """The attempt record a move from `before` to `after` writes, if any. `outcome` names how
    an attempt that goes back to the queue ended (default: failed, to be retried)."""
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
    return Attempt(
        before.id,
        before.attempts,
        state,
        before.worker_id,
        exit_code=after.exit_code,
        started_at=before.started_at,
        finished_at=now,
        reason=after.reason,
    )
