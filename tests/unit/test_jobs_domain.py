"""Pure rules of jobs: validation, transitions, durations and sizes, log attempts."""

from __future__ import annotations

import pytest

from hodei.domain.jobs import (
    TERMINAL,
    Job,
    JobSpec,
    JobState,
    attempt_over,
    check_transition,
    log_attempt,
    new_job_id,
    parse_duration,
    parse_size,
    validate_job_id,
    validate_spec,
)
from hodei.errors import ConflictError, ValidationError


def test_legal_and_illegal_transitions() -> None:
    check_transition(JobState.QUEUED, JobState.ASSIGNED)
    check_transition(JobState.RUNNING, JobState.SUCCEEDED)
    check_transition(JobState.FAILED, JobState.QUEUED)  # retry
    with pytest.raises(ConflictError, match="succeeded -> running"):
        check_transition(JobState.SUCCEEDED, JobState.RUNNING)
    with pytest.raises(ConflictError):
        check_transition(JobState.QUEUED, JobState.RUNNING)
    for state in TERMINAL:
        assert state.terminal
        with pytest.raises(ConflictError):
            check_transition(state, JobState.CANCELLED)


def test_script_rule() -> None:
    assert JobSpec(command="#!/bin/sh\necho hi").is_script
    assert JobSpec(command="echo a\necho b").is_script
    assert not JobSpec(command="echo a").is_script
    assert not JobSpec(command="sh", arguments=("-c", "a\nb")).is_script


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (JobSpec(command="  "), "command must not be empty"),
        (JobSpec(command="echo", env={"1BAD": "x"}), "invalid env key"),
        (JobSpec(command="echo", labels={"": "x"}), "invalid label key"),
        (JobSpec(command="echo", secrets=("no-dash",)), "invalid secret name"),
        (JobSpec(command="echo", cpu=-1), "cpu"),
        (JobSpec(command="echo", max_retries=101), "retries"),
        (JobSpec(command="echo\x00"), "NUL"),
        (JobSpec(command="x" * 300_000), "too large"),
    ],
)
def test_bad_specs_are_refused_with_a_reason(spec: JobSpec, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        validate_spec(spec)


def test_shell_metacharacters_are_plain_data() -> None:
    spec = JobSpec(command="echo", arguments=("$(rm -rf /); `id`",), env={"X": "; ls |"})
    assert validate_spec(spec) is spec


def test_job_ids() -> None:
    a, b = new_job_id(), new_job_id()
    assert a != b and validate_job_id(a) == a
    for bad in ("", "../x", "a/b", "x" * 65, "-lead"):
        with pytest.raises(ValidationError):
            validate_job_id(bad)


def test_durations_and_sizes() -> None:
    assert parse_duration("90") == 90
    assert parse_duration("1h30m") == 5400
    assert parse_duration("250ms") == 0.25
    assert parse_size("512M") == 512 << 20
    assert parse_size("2Gi") == 2 << 30
    assert parse_size("100") == 100
    with pytest.raises(ValidationError):
        parse_duration("soon")
    with pytest.raises(ValidationError):
        parse_size("lots")


@pytest.mark.parametrize(
    "text",
    ["inf", "-inf", "+Infinity", "nan", "-nan", "1e400", "9" * 400, "9" * 400 + "d", "-1",
     "-0.5", "", " ", "3 days", "1e99s", "1h 30m"],
)  # fmt: skip
def test_durations_are_finite_and_not_negative(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_duration(text)


@pytest.mark.parametrize("text", ["9" * 400, "9" * 400 + "T", "12XB", "-5M", "inf", "nan", ""])
def test_sizes_refuse_overflow_and_odd_units(text: str) -> None:
    with pytest.raises(ValidationError):  # not OverflowError from int(float("inf"))
        parse_size(text)


def test_log_attempt_follows_the_coming_attempt_while_queued() -> None:
    job = Job(id="j", spec=JobSpec(command="true"))
    assert log_attempt(job) == 1 and not attempt_over(job, 1)
    running = job.with_changes(state=JobState.RUNNING, attempts=1)
    assert log_attempt(running) == 1 and not attempt_over(running, 1)
    done = running.with_changes(state=JobState.FAILED)
    assert attempt_over(done, 1)
    retried = done.with_changes(state=JobState.QUEUED)
    assert log_attempt(retried) == 2 and attempt_over(retried, 1)
    cancelled_early = job.with_changes(state=JobState.CANCELLED)
    assert attempt_over(cancelled_early, 1)


@pytest.mark.parametrize("job_id", ["abc\n", "a\nb", "x" * 65])
def test_job_ids_with_a_trailing_newline_or_too_long_are_refused(job_id: str) -> None:
    with pytest.raises(ValidationError, match="job id"):
        validate_job_id(job_id)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (JobSpec(command="echo", labels={"k": "v" * 1025}), "label values"),
        (JobSpec(command="echo", secrets=tuple(f"S{i}" for i in range(65))), "too many secrets"),
        (JobSpec(command="echo", queued_by="q" * 201), "queued_by"),
        (JobSpec(command="echo", env={f"E{i}": "v" * 30_000 for i in range(40)}), "spec too large"),
    ],
)
def test_size_limits_keep_one_job_small(spec: JobSpec, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        validate_spec(spec)


def test_a_spec_at_the_limits_is_accepted() -> None:
    spec = JobSpec(
        command="c" * 200_000,
        env={f"E{i}": "v" * 30_000 for i in range(25)},
        labels={f"l{i}": "v" * 1024 for i in range(64)},
        secrets=tuple(f"S{i}" for i in range(64)),
    )
    assert validate_spec(spec) is spec


def test_text_no_store_can_hold_and_huge_keys_get_short_clear_errors() -> None:
    # An unpaired surrogate (JSON's "\udcff", gRPC clients in other languages refuse it first).
    for spec in (
        JobSpec(command="echo \udcff"),
        JobSpec(command="echo", env={"K": "\udcff"}),
        JobSpec(command="echo", labels={"k": "v\ud800"}),
    ):
        with pytest.raises(ValidationError, match="valid Unicode"):
            validate_spec(spec)
    huge = "K" * 100_000
    for spec in (
        JobSpec(command="echo", env={huge: "v"}),
        JobSpec(command="echo", secrets=(huge,)),
    ):
        with pytest.raises(ValidationError) as refused:
            validate_spec(spec)
        assert len(refused.value.message) < 200


def test_memory_must_be_whole_bytes() -> None:
    with pytest.raises(ValidationError, match="whole number of bytes"):
        validate_spec(JobSpec(command="true", memory_bytes=1.5))  # type: ignore[arg-type]


def test_input_keys_round_trip_and_refuse_what_is_not_one() -> None:
    from hodei.domain.jobs import input_key, parse_input_key

    assert parse_input_key(input_key("r0194ab12cd34ef5678.3.0", 2)) == (
        "r0194ab12cd34ef5678.3.0",
        2,
    )
    for bad in ("job", "job/", "/1", "job/x", "a/b/1", "../x/1"):
        with pytest.raises(ValueError):
            parse_input_key(bad)
