"""The gRPC PipelineService's pure parts: status codes, the message of a refused file, and a
run's REST JSON as its protobuf message."""

from __future__ import annotations

import grpc

from hodei.domain.pipelines import Issue, PipelineError
from hodei.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    StoreError,
    ValidationError,
)
from hodei.server.api.grpc.calls import issues_message, status_of
from hodei.server.api.grpc.pipeline_service import run_to_proto


def test_status_codes_follow_the_error_kind() -> None:
    issues = PipelineError([Issue(1, 1, "bad")], "ci.yaml")
    assert status_of(issues) is grpc.StatusCode.INVALID_ARGUMENT
    assert status_of(ValidationError("x")) is grpc.StatusCode.INVALID_ARGUMENT
    assert status_of(NotFoundError("x")) is grpc.StatusCode.NOT_FOUND
    assert status_of(ConflictError("x")) is grpc.StatusCode.FAILED_PRECONDITION
    assert status_of(ForbiddenError("x")) is grpc.StatusCode.PERMISSION_DENIED
    assert status_of(AuthError("x")) is grpc.StatusCode.UNAUTHENTICATED
    assert status_of(StoreError("x")) is grpc.StatusCode.UNAVAILABLE


def test_issues_message_lists_every_issue_within_the_bound() -> None:
    few = PipelineError([Issue(3, 5, "unknown field 'nedds'"), Issue(1, 1, "x")], "ci.yaml")
    assert issues_message(few).splitlines() == [
        "ci.yaml: 2 errors",
        "ci.yaml:1:1: x",
        "ci.yaml:3:5: unknown field 'nedds'",
    ]
    many = PipelineError([Issue(n, 1, "m" * 50) for n in range(1, 201)], "ci.yaml")
    text = issues_message(many, limit=1000)
    assert len(text) <= 1000
    lines = text.splitlines()
    assert lines[0] == "ci.yaml: 200 errors" and lines[1].startswith("ci.yaml:1:1: ")
    assert lines[-1].startswith("... and ") and lines[-1].endswith(" more")
    assert len(lines) - 2 + int(lines[-1].split()[2]) == 200


def test_run_to_proto_carries_the_views_fields() -> None:
    row = {
        "id": "t[py=3.12]",
        "step": "t",
        "index": 1,
        "status": "succeeded",
        "needs": ["build"],
        "when": "on_success",
        "matrix": {"py": "3.12"},
        "job_id": "r0123456789abcdef0.1.0",
        "attempt": 1,
        "generation": 0,
        "reason": "",
        "outputs": {"v": "1"},
        "cached_from": None,
        "artifact": {"sha256": "ab" * 32, "size": 10240},
        "started_at": "2026-01-01T00:00:00.000Z",
        "finished_at": "2026-01-01T00:00:01.500Z",
        "duration_s": 1.5,
    }
    pending = {**row, "id": "p", "status": "pending", "job_id": None, "duration_s": None}
    view = {
        "id": "r0123456789abcdef0",
        "name": "demo",
        "state": "running",
        "reason": "",
        "filename": "ci.yaml",
        "params": {"who": "me"},
        "approved": [],
        "no_cache": False,
        "queued_by": "token:x",
        "cancelled_by": None,
        "generation": 0,
        "version": 3,
        "created_at": "2026-01-01T00:00:00.000Z",
        "finished_at": None,
        "counts": {"succeeded": 1, "pending": 1},
        "awaiting_approval": ["deploy"],
        "steps": [row, pending],
    }
    run = run_to_proto(view)
    assert (run.id, run.state, run.version, run.finished_at) == (view["id"], "running", 3, "")
    assert dict(run.counts) == {"succeeded": 1, "pending": 1}
    assert list(run.awaiting_approval) == ["deploy"] and dict(run.params) == {"who": "me"}
    done, waiting = run.steps
    assert (done.id, done.step, dict(done.matrix), list(done.needs)) == (
        "t[py=3.12]",
        "t",
        {"py": "3.12"},
        ["build"],
    )
    assert done.HasField("duration_s") and done.duration_s == 1.5
    assert done.artifact_sha256 == "ab" * 32 and done.artifact_bytes == 10240
    assert dict(done.outputs) == {"v": "1"}
    assert not waiting.HasField("duration_s") and waiting.job_id == ""
    summary = run_to_proto({k: v for k, v in view.items() if k not in ("steps",)})
    assert not summary.steps and dict(summary.counts) == {"succeeded": 1, "pending": 1}
