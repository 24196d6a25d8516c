"""The server's one place where domain objects and the HWP wire messages meet (the agent has
its own): what the core hands a worker becomes protobuf here, and what a worker reports is
read back into domain terms."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hodei._proto.hodei.v1 import worker_pb2 as pb
from hodei.domain.work import Assignment, Usage


def add_assignment(
    out: Any,
    assignment: Assignment,
    inputs: Sequence[pb.ArtifactInput] = (),
    max_artifact_bytes: int = 0,
) -> None:
    """Append `assignment` to a repeated AssignJob field (built in place: no copy), with
    what the server has of its inputs; `max_artifact_bytes` when it names no limit itself."""
    out.add(
        job_id=assignment.job_id,
        attempt=assignment.attempt,
        name=assignment.name,
        command=assignment.command,
        arguments=assignment.arguments,
        environment=assignment.env,
        secrets=assignment.secrets,
        resources={"cpu": assignment.cpu, "memory_bytes": assignment.memory_bytes},
        timeout_ms=int(assignment.timeout_s * 1000),
        working_dir=assignment.working_dir,
        max_output_bytes=assignment.max_output_bytes,
        artifacts=assignment.artifacts,
        inputs=inputs,
        max_artifact_bytes=assignment.max_artifact_bytes or max_artifact_bytes,
        traceparent=assignment.traceparent,
    )


def cancel_message(job_id: str, attempt: int, grace_ms: int, reason: str) -> pb.CancelJob:
    return pb.CancelJob(job_id=job_id, attempt=attempt, grace_ms=grace_ms, reason=reason)


def usage_from_wire(usage: pb.ResourceUsage) -> Usage:
    return Usage(
        cpu_percent=usage.cpu_percent,
        memory_bytes=usage.memory_bytes,
        memory_total_bytes=usage.memory_total_bytes,
        rx_bytes=usage.rx_bytes,
        tx_bytes=usage.tx_bytes,
        disk_io_bytes=usage.disk_io_bytes,
    )
