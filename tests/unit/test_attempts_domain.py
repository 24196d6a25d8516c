"""attempt_record: which attempt record each job state change writes."""

from __future__ import annotations

import pytest

from hodei.domain.attempts import Attempt, AttemptState, Failure, attempt_record
from hodei.domain.jobs import Job, JobSpec, JobState, validate_idempotency_key
from hodei.errors import ValidationError

S = JobState


def job(state: JobState, **fields: object) -> Job:
    return Job(id="j", spec=JobSpec(command="true"), state=state).with_changes(**fields)


def test_dispatch_opens_the_next_attempt() -> None:
    before = job(S.QUEUED, attempts=1)
    after = before.with_changes(state=S.ASSIGNED, attempts=2, worker_id="w")
    assert attempt_record(before, after, 5.0) == Attempt(
        "j", 2, AttemptState.ASSIGNED, "w", assigned_at=5.0
    )


def test_start_records_when_it_ran() -> None:
    before = job(S.ASSIGNED, attempts=1, worker_id="w")
    after = before.with_changes(state=S.RUNNING, started_at=7.0)
    assert attempt_record(before, after, 7.5) == Attempt(
        "j", 1, AttemptState.RUNNING, "w", started_at=7.0
    )


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (S.SUCCEEDED, AttemptState.SUCCEEDED),
        (S.FAILED, AttemptState.FAILED),
        (S.CANCELLED, AttemptState.CANCELLED),
        (S.TIMED_OUT, AttemptState.TIMED_OUT),
    ],
)
def test_an_ending_attempt_takes_the_jobs_outcome(target: JobState, expected: AttemptState) -> None:
    before = job(S.RUNNING, attempts=2, worker_id="w", started_at=3.0)
    after = before.with_changes(state=target, exit_code=1, reason="why", finished_at=9.0)
    failure = None if expected is AttemptState.SUCCEEDED else Failure.JOB
    assert attempt_record(before, after, 9.0) == Attempt(
        "j", 2, expected, "w", 1, None, 3.0, 9.0, "why", failure
    )


def test_back_to_the_queue_is_a_failed_attempt_unless_told_otherwise() -> None:
    before = job(S.RUNNING, attempts=1, worker_id="w", started_at=1.0)
    after = before.with_changes(state=S.QUEUED, worker_id=None, exit_code=2, reason="retry")
    failed = attempt_record(before, after, 4.0)
    assert failed is not None and failed.state is AttemptState.FAILED
    assert (failed.worker_id, failed.exit_code, failed.finished_at) == ("w", 2, 4.0)
    assert failed.failure is Failure.JOB
    unrun = attempt_record(before, after, 4.0, AttemptState.NOT_RUN)
    assert unrun is not None and unrun.state is AttemptState.NOT_RUN and unrun.state.over
    assert unrun.failure is Failure.NOT_RUN and not unrun.failure.platform
    lost = attempt_record(before, after, 4.0, failure=Failure.WORKER_LOST)
    assert lost is not None and lost.state is AttemptState.FAILED and lost.failure.platform


@pytest.mark.parametrize(
    ("before", "target"),
    [
        (job(S.QUEUED), S.CANCELLED),  # never dispatched
        (job(S.FAILED, attempts=2), S.QUEUED),  # `hodei retry`: the next dispatch opens one
        (job(S.ASSIGNED, attempts=0), S.FAILED),  # no attempt to close
    ],
)
def test_moves_outside_an_attempt_record_nothing(before: Job, target: JobState) -> None:
    assert attempt_record(before, before.with_changes(state=target), 1.0) is None


@pytest.mark.parametrize("key", ["a", "deploy-2026-11-30/42", "x" * 200, "A:b=c"])
def test_valid_idempotency_keys(key: str) -> None:
    assert validate_idempotency_key(key) == key


@pytest.mark.parametrize("key", ["", "has space", "x" * 201, "tab\t", "é", "nl\n"])
def test_invalid_idempotency_keys(key: str) -> None:
    with pytest.raises(ValidationError, match="idempotency key"):
        validate_idempotency_key(key)
