"""Pipeline runs as stored values: a run of one pipeline file, and one row per job of its DAG.

A run keeps the file's text and the params it was started with, so every server (and the same
server after a restart) rebuilds the same DAG from it. Each job of the DAG has a `RunStep`
row; its `status` only moves forward within a generation (pending -> running -> done, or
pending -> skipped), and a retry of the run starts a new generation of the steps it re-runs.
The job that runs a step has a deterministic id, `step_job_id(run, index, generation)`: the
store refuses a second job with that id, so a step starts at most once per generation even
when two servers, or one server before and after a crash, both decide to start it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from enum import StrEnum

from hodei.domain.jobs import STEP_JOB_ID, new_job_id
from hodei.domain.pipelines.model import JobStatus

_RUN_ID = re.compile(r"^r[0-9a-f]{17}$")


class RunState(StrEnum):
    RUNNING = "running"  # something is running or may start without a decision
    WAITING = "waiting"  # nothing runs: a manual step waits for its approval
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)


ACTIVE_RUN_STATES = frozenset({RunState.RUNNING, RunState.WAITING})


def run_state_of(status: JobStatus) -> RunState:
    """The run state for the domain's `run_status` answer."""
    return {
        JobStatus.RUNNING: RunState.RUNNING,
        JobStatus.PENDING: RunState.WAITING,
        JobStatus.SUCCEEDED: RunState.SUCCEEDED,
        JobStatus.FAILED: RunState.FAILED,
        JobStatus.CANCELLED: RunState.CANCELLED,
        JobStatus.SKIPPED: RunState.SUCCEEDED,
    }[status]


@dataclass(frozen=True, slots=True)
class PipelineRun:
    id: str
    name: str  # the pipeline's name
    source: str  # the pipeline file's text, as submitted
    filename: str = "pipeline.yaml"  # for error messages and display
    params: dict[str, str] = field(default_factory=dict)  # resolved values
    state: RunState = RunState.RUNNING
    approved: tuple[str, ...] = ()  # manual steps someone approved
    no_cache: bool = False
    queued_by: str = ""
    created_at: float = 0.0
    finished_at: float | None = None
    reason: str = ""  # why it ended as it did ("test[os=linux] failed", "cancelled by ...")
    cancelled_by: str | None = None  # set by a cancel: nothing more starts, running steps stop
    generation: int = 0  # retries of the run so far
    version: int = 0  # bumped by every update (compare-and-swap)
    seq: int = 0  # store order, for paging

    def with_changes(self, **changes: object) -> PipelineRun:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class RunStep:
    """One job of a run's DAG (a step, or one matrix combination of it)."""

    run_id: str
    step_id: str  # the DAG job id: "build", "test[os=linux,python=3.12]"
    index: int  # its place in the DAG's topological job order (stable for the file)
    step: str  # the step's name ("test")
    status: JobStatus = JobStatus.PENDING
    generation: int = 0  # the run generation that last (re)set this step
    job_id: str | None = None  # the job that runs (or ran) it; for a cached step, the source's
    attempt: int = 0  # the job's attempt whose result counts (its artifact and outputs)
    reason: str = ""  # why it was skipped, failed or cached ("cached from JOB")
    outputs: dict[str, str] = field(default_factory=dict)
    cache_key: str | None = None  # set when the step asks for the result cache
    cached_from: str | None = None  # the job whose result this step reused
    artifact_sha256: str | None = None  # the archive the step produced (or reused)
    artifact_bytes: int = 0
    started_at: float | None = None
    finished_at: float | None = None

    def with_changes(self, **changes: object) -> RunStep:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class StepUpdate:
    """A compare-and-swap on one step row: applied only if its status is in `expected` and its
    generation is `generation`. `changes` are RunStep fields (not run_id, step_id, index)."""

    step_id: str
    expected: frozenset[JobStatus]
    generation: int
    changes: dict[str, object]


def new_run_id() -> str:
    """'r' + a time-ordered job id: sorts by creation, and never a valid client job id."""
    return "r" + new_job_id()


def valid_run_id(text: str) -> bool:
    return bool(_RUN_ID.fullmatch(text))


def step_job_id(run_id: str, index: int, generation: int) -> str:
    return f"{run_id}.{index}.{generation}"


def parse_step_job_id(job_id: str) -> tuple[str, int, int] | None:
    """(run id, step index, generation) of a step's job id, or None for any other job."""
    match = STEP_JOB_ID.fullmatch(job_id)
    if match is None:
        return None
    return match.group(1), int(match.group(2)), int(match.group(3))
