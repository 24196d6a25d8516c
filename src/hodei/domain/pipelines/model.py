"""Pipelines: the model of a parsed pipeline file, its limits and its errors.

Everything here is a frozen value. `parse.py` builds a `Pipeline` from a file, `dag.py`
expands its steps into jobs and answers what may run, `render.py` fills in expressions and
turns a step's job into a `JobSpec`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from hodei.domain.jobs import JobState
from hodei.errors import ValidationError


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one pipeline file, checked while it is read (so a hostile file costs little)."""

    max_bytes: int = 1 << 20  # the file itself
    max_depth: int = 32  # nested mappings and sequences
    max_nodes: int = 250_000  # scalars, mappings and sequences in the file
    max_steps: int = 1_000  # steps as written, before matrix expansion
    max_jobs_per_step: int = 256  # matrix combinations of one step
    max_jobs: int = 10_000  # jobs of the whole pipeline after expansion
    max_errors: int = 200  # issues reported before the rest are summed up


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True, order=True)
class Issue:
    """One problem found in a pipeline file, at a 1-based line and column."""

    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.line}:{self.column}: {self.message}"


class PipelineError(ValidationError):
    """A pipeline file that cannot be used; `issues` holds every problem found, in file order."""

    def __init__(self, issues: Iterable[Issue], source: str = "pipeline") -> None:
        self.issues = tuple(sorted(issues))
        self.source = source
        count = len(self.issues)
        head = f"{source}: {count} error{'s' if count != 1 else ''}"
        super().__init__("\n".join([head, *(f"{source}:{issue}" for issue in self.issues)]))


class When(StrEnum):
    """When a step runs, given how the steps it needs ended."""

    ON_SUCCESS = "on_success"  # every step it needs succeeded (the default)
    ON_FAILURE = "on_failure"  # every step it needs is done and one of them did not succeed
    ALWAYS = "always"  # every step it needs is done, however it ended
    MANUAL = "manual"  # as on_success, and someone approved it


class ParamType(StrEnum):
    STRING = "string"
    INT = "int"
    BOOL = "bool"
    CHOICE = "choice"


@dataclass(frozen=True, slots=True)
class Param:
    """A value given when a run starts. Values are strings once resolved ("true", "42")."""

    name: str
    type: ParamType = ParamType.STRING
    default: str | None = None  # None: the param is required
    options: tuple[str, ...] = ()  # for choice
    description: str = ""

    @property
    def required(self) -> bool:
        return self.default is None


Combination = tuple[tuple[str, str], ...]  # (key, value) pairs in the matrix's key order


@dataclass(frozen=True, slots=True)
class Matrix:
    """A step run once per combination. `combinations` is the expansion, computed at parse."""

    axes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    exclude: tuple[Combination, ...] = ()
    include: tuple[Combination, ...] = ()
    max_parallel: int | None = None
    combinations: tuple[Combination, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        if self.axes:
            return tuple(key for key, _ in self.axes)
        return tuple(key for key, _ in self.include[0]) if self.include else ()


@dataclass(frozen=True, slots=True)
class Cache:
    """`cache: true` (key None: derived from the rendered step) or `cache: {key: ...}`."""

    key: str | None = None


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One step as written (expressions not yet rendered)."""

    name: str
    run: str | None = None  # a command line, or a script when it has several lines
    command: str | None = None  # exec'd directly with args
    args: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    cpu: float = 0.0
    memory_bytes: int = 0
    timeout_s: float = 0.0
    retries: int = 0
    priority: int = 0
    image: str | None = None
    matrix: Matrix | None = None
    artifacts: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    when: When = When.ON_SUCCESS
    continue_on_error: bool = False
    cache: Cache | None = None
    description: str = ""
    line: int = 0  # where the step's name is in the file
    column: int = 0


@dataclass(frozen=True, slots=True)
class Pipeline:
    name: str
    steps: dict[str, StepSpec]  # file order
    env: dict[str, str] = field(default_factory=dict)
    params: dict[str, Param] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True, slots=True)
class StepJob:
    """One job of a step: the step itself, or one matrix combination of it."""

    id: str  # "build", or "test[python=3.11,os=linux]"
    pipeline: str
    step: StepSpec
    matrix: Combination = ()
    index: int = 0  # the combination's place in the step's expansion

    @property
    def step_name(self) -> str:
        return self.step.name

    @property
    def matrix_values(self) -> dict[str, str]:
        return dict(self.matrix)


def job_id(step: str, combination: Combination) -> str:
    """The stable id of a step's job: `test[python=3.11,os=linux]`, or `build` alone."""
    if not combination:
        return step
    return f"{step}[{','.join(f'{key}={value}' for key, value in combination)}]"


class JobStatus(StrEnum):
    """How one job of a run stands, as the DAG helpers see it."""

    PENDING = "pending"  # not started (nothing recorded means pending)
    RUNNING = "running"  # queued, assigned or running
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # for good: its retries are spent (a timeout is a failure)
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def done(self) -> bool:
        return self not in (JobStatus.PENDING, JobStatus.RUNNING)


def status_of(state: JobState) -> JobStatus:
    """The status of a pipeline job whose `Job` is in `state`."""
    return _FROM_JOB_STATE[state]


_FROM_JOB_STATE = {
    JobState.QUEUED: JobStatus.RUNNING,
    JobState.ASSIGNED: JobStatus.RUNNING,
    JobState.RUNNING: JobStatus.RUNNING,
    JobState.SUCCEEDED: JobStatus.SUCCEEDED,
    JobState.FAILED: JobStatus.FAILED,
    JobState.TIMED_OUT: JobStatus.FAILED,
    JobState.CANCELLED: JobStatus.CANCELLED,
}
