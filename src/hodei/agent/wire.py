"""The agent's edge: HWP messages read into the project's own objects, and results written back.

The runner takes an `Assignment` and returns a `JobOutcome`; the session converts here, once per
attempt. Log output is not converted: the outbox cuts the bytes into LogChunks itself, as they
are far too many for a layer in between.
"""

from __future__ import annotations

from hodei._proto.hodei.v1 import worker_pb2
from hodei.agent.runner import JobOutcome
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
    )


def result_to_wire(
    job_id: str, attempt: int, outcome: JobOutcome, timestamp_ns: int = 0
) -> worker_pb2.JobResult:
    """The JobResult of an attempt; a timestamp of 0 is filled in when the outbox queues it,
    and `last_sequence` when it is sent."""
    return worker_pb2.JobResult(
        job_id=job_id,
        attempt=attempt,
        exit_code=outcome.exit_code,
        signal=outcome.signal,
        cancelled=outcome.cancelled,
        timed_out=outcome.timed_out,
        error=outcome.error,
        timestamp_ns=timestamp_ns,
    )
