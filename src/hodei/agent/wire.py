"""The agent's edge: HWP messages read into the project's own objects, and results written back.

The runner takes an `Assignment` and returns a `JobOutcome`; the session converts here, once per
attempt. Log output is not converted: the outbox cuts the bytes into LogChunks itself, as they
are far too many for a layer in between.
"""

from __future__ import annotations

from typing import Any

from hodei._proto.hodei.v1 import worker_pb2
from hodei.agent.artifacts import Archive
from hodei.agent.runner import JobOutcome
from hodei.domain.attempts import ResourceUse
from hodei.domain.work import Assignment


def assignment_from_wire(msg: worker_pb2.AssignJob) -> Assignment:
    # Copied: an Assignment holds plain values, not containers that belong to the message.
    return Assignment(
        job_id=msg.job_id,
        attempt=msg.attempt,
        command=msg.command,
        arguments=tuple(msg.arguments),
        name=msg.name,
        env=dict(msg.environment),
        secrets=dict(msg.secrets),
        cpu=msg.resources.cpu,
        memory_bytes=msg.resources.memory_bytes,
        timeout_s=msg.timeout_ms / 1000,
        working_dir=msg.working_dir,
        max_output_bytes=msg.max_output_bytes,
        artifacts=tuple(msg.artifacts),
        inputs=tuple(i.key for i in msg.inputs),
        max_artifact_bytes=msg.max_artifact_bytes,
        traceparent=msg.traceparent,
    )


def inputs_from_wire(msg: worker_pb2.AssignJob) -> list[tuple[str, str, int]]:
    """(key, sha256, size) of each input archive the assignment names."""
    return [(i.key, i.sha256, i.size) for i in msg.inputs]


def result_to_wire(
    job_id: str,
    attempt: int,
    outcome: JobOutcome,
    timestamp_ns: int = 0,
    *,
    outputs: bytes = b"",
    archive: Archive | None = None,
) -> worker_pb2.JobResult:
    """The JobResult of an attempt; a timestamp of 0 is filled in when the outbox queues it,
    and `last_sequence` when it is sent. `archive`: the attempt's artifacts, sent before it."""
    return worker_pb2.JobResult(
        job_id=job_id,
        attempt=attempt,
        exit_code=outcome.exit_code,
        signal=outcome.signal,
        cancelled=outcome.cancelled,
        timed_out=outcome.timed_out,
        error=outcome.error,
        timestamp_ns=timestamp_ns,
        outputs=outputs,
        artifact_sha256=archive.sha256 if archive is not None else "",
        artifact_bytes=archive.size if archive is not None else 0,
        **_usage_fields(outcome.usage),
    )


def _usage_fields(usage: ResourceUse | None) -> dict[str, Any]:
    if usage is None:
        return {}
    io = usage.read_bytes is not None and usage.written_bytes is not None
    return {
        "has_usage": True,
        "cpu_seconds": usage.cpu_seconds,
        "peak_memory_bytes": usage.peak_memory_bytes,
        "has_io": io,
        "read_bytes": usage.read_bytes or 0,
        "written_bytes": usage.written_bytes or 0,
    }
