"""What the server and a worker say to each other about one attempt, in the project's own
terms (the gRPC messages are built from these, and read into them, only at each side's edge).

An `Assignment` is an attempt handed to a worker: everything the agent needs to run it. The
reports a worker sends back (log output, a start, a result) are read by the server's core
through the small Protocols below, which the wire messages satisfy as they are: a report is
never copied on the hot path just to change its type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from hodei.domain.jobs import Job

NOT_RUN = -1  # a result's exit code for an attempt the agent never started (its error says why)
# The agent itself failed while running the attempt (a fault of the worker, not of the job):
# settled as a platform fault, so it is tried again within infra_retries and then fails, rather
# than being queued again for ever as NOT_RUN would.
AGENT_FAILED = -2


@dataclass(frozen=True, slots=True)
class Assignment:
    job_id: str
    attempt: int
    command: str  # one string: run by the shell; multi-line or #!: a script
    arguments: tuple[str, ...] = ()  # when set, command + arguments are exec'd directly
    name: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)  # env vars, masked in the output
    cpu: float = 0.0
    memory_bytes: int = 0
    timeout_s: float = 0.0  # 0: none
    working_dir: str = ""  # empty: the agent's own work directory for the attempt
    max_output_bytes: int = 0  # output kept at most; 0: the agent's default
    artifacts: tuple[str, ...] = ()  # paths in the work dir archived when the attempt succeeds
    inputs: tuple[str, ...] = ()  # archives ("JOB_ID/ATTEMPT") unpacked there before it starts
    max_artifact_bytes: int = 0  # the archive's size limit; 0: the server's (then agent's) default
    traceparent: str = ""  # W3C trace context of the attempt ("": not traced)


def assignment_of(
    job: Job,
    secrets: Mapping[str, str],
    max_output_bytes: int = 0,
    max_artifact_bytes: int = 0,
    traceparent: str = "",
) -> Assignment:
    """The assignment of `job`'s current attempt (`job.attempts`), with its secrets' values."""
    spec = job.spec
    return Assignment(
        job_id=job.id,
        attempt=job.attempts,
        command=spec.command,
        arguments=spec.arguments,
        name=spec.name,
        env=spec.env,
        secrets=secrets,
        cpu=spec.cpu,
        memory_bytes=spec.memory_bytes,
        timeout_s=spec.timeout_s,
        max_output_bytes=max_output_bytes,
        artifacts=spec.artifacts,
        inputs=spec.inputs,
        max_artifact_bytes=max_artifact_bytes,
        traceparent=traceparent,
    )


class LogReport(Protocol):
    """Output of an attempt, starting at byte `offset` of it; `sequence` counts the chunks."""

    @property
    def job_id(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def sequence(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def data(self) -> bytes: ...


class StartReport(Protocol):
    @property
    def job_id(self) -> str: ...
    @property
    def attempt(self) -> int: ...


class ResultReport(Protocol):
    """How an attempt ended, as its agent saw it."""

    @property
    def job_id(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def exit_code(self) -> int: ...  # NOT_RUN: never started
    @property
    def signal(self) -> int: ...
    @property
    def timed_out(self) -> bool: ...
    @property
    def cancelled(self) -> bool: ...
    @property
    def error(self) -> str: ...
    @property
    def last_sequence(self) -> int: ...  # of the attempt's log chunks
    @property
    def artifact_sha256(self) -> str: ...  # of its archive ("" when it has none)
    @property
    def artifact_bytes(self) -> int: ...
    @property
    def outputs(self) -> bytes: ...  # its HODEI_OUTPUTS file (NAME=value lines)
    # What it used (hodei.domain.attempts.ResourceUse), when has_usage; bytes when has_io.
    @property
    def has_usage(self) -> bool: ...
    @property
    def cpu_seconds(self) -> float: ...
    @property
    def peak_memory_bytes(self) -> int: ...
    @property
    def has_io(self) -> bool: ...
    @property
    def read_bytes(self) -> int: ...
    @property
    def written_bytes(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Usage:
    """A worker's resource usage, as its last heartbeat gave it."""

    cpu_percent: float = 0.0
    memory_bytes: int = 0  # used
    memory_total_bytes: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    disk_io_bytes: int = 0
