"""The agent's edge: an AssignJob read into an Assignment, a JobOutcome written as a JobResult."""

from __future__ import annotations

from hodei._proto.hodei.v1 import worker_pb2
from hodei.agent.runner import JobOutcome
from hodei.agent.wire import assignment_from_wire, result_to_wire
from hodei.domain.work import NOT_RUN, Assignment


def test_assignment_from_wire_reads_every_field() -> None:
    msg = worker_pb2.AssignJob(
        job_id="j",
        attempt=3,
        name="build",
        command="make",
        arguments=["-j", "4"],
        environment={"A": "1"},
        secrets={"TOKEN": "s"},
        resources={"cpu": 1.5, "memory_bytes": 1 << 30},
        timeout_ms=2500,
        working_dir="/src",
        max_output_bytes=1000,
    )
    assert assignment_from_wire(msg) == Assignment(
        job_id="j",
        attempt=3,
        command="make",
        arguments=("-j", "4"),
        name="build",
        env={"A": "1"},
        secrets={"TOKEN": "s"},
        cpu=1.5,
        memory_bytes=1 << 30,
        timeout_s=2.5,
        working_dir="/src",
        max_output_bytes=1000,
    )


def test_assignment_from_wire_defaults_and_owns_its_maps() -> None:
    msg = worker_pb2.AssignJob(job_id="j", attempt=1, command="true")
    a = assignment_from_wire(msg)
    assert a == Assignment(job_id="j", attempt=1, command="true")
    msg.environment["LATER"] = "x"
    assert dict(a.env) == {}
    assert type(a.env) is dict and type(a.secrets) is dict


def test_result_to_wire() -> None:
    outcome = JobOutcome(exit_code=137, signal=9, cancelled=True, timed_out=False, pid=7)
    assert result_to_wire("j", 2, outcome, 99) == worker_pb2.JobResult(
        job_id="j", attempt=2, exit_code=137, signal=9, cancelled=True, timestamp_ns=99
    )
    refused = result_to_wire("j", 2, JobOutcome(exit_code=NOT_RUN, error="not started"))
    assert (refused.exit_code, refused.error, refused.timestamp_ns) == (NOT_RUN, "not started", 0)
