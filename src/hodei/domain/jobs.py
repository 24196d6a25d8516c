"""Jobs: the spec a user submits, the states a job goes through, and the transition rules."""

from __future__ import annotations

import math
import os
import re
import secrets as _secrets
import time
from dataclasses import dataclass, field, replace
from enum import StrEnum

from hodei.errors import ConflictError, ValidationError

MAX_COMMAND_BYTES = 256 * 1024
MAX_NAME = 200
MAX_ENV = 256
MAX_LABELS = 64
MAX_ARGS = 4096
MAX_SECRETS = 64
MAX_LABEL_VALUE = 1024
MAX_SPEC_BYTES = 1024 * 1024  # command, arguments, env, labels and name together
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# The ids the pipeline engine gives its steps' jobs (RUN.INDEX.GENERATION): a client may not
# choose one, so nobody can create a step's job before the engine does.
STEP_JOB_ID = re.compile(r"^(r[0-9a-f]{17})\.(\d{1,6})\.(\d{1,6})$")
# A schedule's fire (SCHEDULE-[n]EPOCH): the job it starts has this id, so the store refuses a
# second start of one fire. Clients may not use the form, or they could block a fire.
FIRE_JOB_ID = re.compile(r"^(s[0-9a-f]{12})-(n?)(\d{1,16})$")
_INPUT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}/\d{1,9}$")
MAX_ARTIFACT_PATHS = 100
MAX_IMAGE = 255
_IMAGE_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_RE = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"(?::[0-9]{1,5})?/)?"  # a registry host: only when a path component follows
    rf"{_IMAGE_COMPONENT}(?:/{_IMAGE_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@sha256:[0-9a-f]{64})?"
)
MAX_INPUTS = 1024
_IDEMPOTENCY_RE = re.compile(r"^[\x21-\x7e]{1,200}$")
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")


class JobState(StrEnum):
    QUEUED = "queued"
    ASSIGNED = "assigned"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT})
ACTIVE = frozenset({JobState.ASSIGNED, JobState.RUNNING})

# Declarative transition rules: the only legal moves. Retry re-queues a finished job.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.ASSIGNED, JobState.CANCELLED, JobState.FAILED}),
    JobState.ASSIGNED: frozenset(
        {
            JobState.RUNNING,
            JobState.QUEUED,
            JobState.CANCELLED,
            JobState.FAILED,
            JobState.SUCCEEDED,
            JobState.TIMED_OUT,
        }
    ),
    JobState.RUNNING: frozenset(
        {
            JobState.SUCCEEDED,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.TIMED_OUT,
            JobState.QUEUED,
        }
    ),
    JobState.SUCCEEDED: frozenset({JobState.QUEUED}),
    JobState.FAILED: frozenset({JobState.QUEUED}),
    JobState.CANCELLED: frozenset({JobState.QUEUED}),
    JobState.TIMED_OUT: frozenset({JobState.QUEUED}),
}


def check_transition(current: JobState, target: JobState) -> None:
    """Raise ConflictError unless current -> target is a legal move."""
    if target not in TRANSITIONS[current]:
        raise ConflictError(f"illegal transition {current} -> {target}")


def new_job_id() -> str:
    # Time-ordered prefix (ms, hex) so ids sort roughly by creation; random suffix for uniqueness.
    # At ~1,000 submits a millisecond, 24 random bits would repeat within one (and the submit
    # fail as a duplicate id), so suffixes already given out this millisecond are redrawn.
    global _id_ms
    ms = int(time.time() * 1000)
    if ms != _id_ms:
        _id_ms = ms
        _id_suffixes.clear()
    while (suffix := _random_bytes(3).hex()) in _id_suffixes:
        pass
    _id_suffixes.add(suffix)
    return f"{ms:011x}{suffix}"


_id_ms = 0
_id_suffixes: set[str] = set()


# os.urandom read in blocks: one getrandom() per 1,024 job ids rather than one per id (that
# syscall cost ~7% of a REST submit on the benchmark VM). Same randomness; a forked child
# starts a fresh block so it never repeats its parent's bytes.
_pool = bytearray()


def _random_bytes(n: int) -> bytes:
    if len(_pool) < n:
        _pool[:] = _secrets.token_bytes(3072)
    out = bytes(_pool[-n:])
    del _pool[-n:]
    return out


os.register_at_fork(after_in_child=_pool.clear)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What the user asked for. Secrets are names only: values never live in the job record."""

    command: str
    arguments: tuple[str, ...] = ()
    name: str = ""
    env: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    cpu: float = 0.0
    memory_bytes: int = 0
    timeout_s: float = 0.0
    max_retries: int = 0  # runs again after its own failure (exit code), at most this often
    priority: int = 0
    queued_by: str = ""
    # Queued again after an attempt lost to the platform (its worker or server gone, the
    # store failing), at most this often, without spending max_retries. None: the server's
    # default, which submit records here. no_infra_retry: such a loss fails the job (for work
    # that must not run twice).
    infra_retries: int | None = None
    no_infra_retry: bool = False
    # Paths (relative to the work directory) uploaded as the attempt's artifact archive when
    # it succeeds; and the artifacts ("JOB_ID/ATTEMPT") unpacked into the work directory
    # before it starts (a pipeline step's inputs from the steps it needs).
    artifacts: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    # The container image to run in (None: the provider's own worker image), with the agent
    # injected into it. Workers are keyed by it: a job lands only on a worker of its image.
    image: str | None = None

    @property
    def is_script(self) -> bool:
        """Without arguments, a multi-line command or one starting with #! runs as a script."""
        return not self.arguments and (
            "\n" in self.command.strip() or self.command.startswith("#!")
        )


def validate_idempotency_key(key: str) -> str:
    if not _IDEMPOTENCY_RE.fullmatch(key):
        raise ValidationError(
            "idempotency key must be 1-200 printable ASCII characters without spaces"
        )
    return key


def validate_job_id(job_id: str, *, step: bool | None = False, fire: bool = False) -> str:
    """A job id a client chose; `step`: one the pipeline engine made (RUN.INDEX.GENERATION);
    `fire`: one a schedule's fire made (SCHEDULE-EPOCH); `step=None`: any existing job's id."""
    if not _ID_RE.fullmatch(job_id):
        raise ValidationError(
            "job id must be 1-64 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if step is None:
        return job_id
    if bool(STEP_JOB_ID.fullmatch(job_id)) is not step:
        raise ValidationError(
            "job ids of the form rHEX.N.N are the pipeline engine's"
            if not step
            else f"{job_id!r} is not a pipeline step's job id"
        )
    if not step and bool(FIRE_JOB_ID.fullmatch(job_id)) is not fire:
        raise ValidationError(
            "job ids of the form sHEX-N are the scheduler's"
            if not fire
            else f"{job_id!r} is not a schedule fire's job id"
        )
    return job_id


def _check_map(kind: str, values: dict[str, str], key_re: re.Pattern[str], limit: int) -> None:
    if len(values) > limit:
        raise ValidationError(f"too many {kind} entries ({len(values)} > {limit})")
    for key, value in values.items():
        if not isinstance(key, str) or not key_re.fullmatch(key):
            raise ValidationError(f"invalid {kind} key {shown(key)}")
        if not isinstance(value, str) or len(value) > 32 * 1024 or "\x00" in value:
            raise ValidationError(f"invalid {kind} value for {shown(key)}")


def _check_sizes(spec: JobSpec) -> None:
    """Bounds that keep one job (and so one assignment message) small."""
    if any(len(value) > MAX_LABEL_VALUE for value in spec.labels.values()):
        raise ValidationError(f"label values must be at most {MAX_LABEL_VALUE} characters")
    if len(spec.secrets) > MAX_SECRETS:
        raise ValidationError(f"too many secrets ({len(spec.secrets)} > {MAX_SECRETS})")
    if len(spec.queued_by) > MAX_NAME:
        raise ValidationError(f"queued_by must be at most {MAX_NAME} characters")
    pairs = [*spec.env.items(), *spec.labels.items()]
    size = sum(len(s.encode()) for s in (spec.command, spec.name, *spec.arguments))
    size += sum(len(k.encode()) + len(v.encode()) for k, v in pairs)
    if size > MAX_SPEC_BYTES:
        raise ValidationError(f"job spec too large ({size} bytes > {MAX_SPEC_BYTES})")


def validate_spec(spec: JobSpec) -> JobSpec:
    """Return the spec if it is acceptable, else raise ValidationError saying why."""
    try:
        return _validate_spec(spec)
    except UnicodeEncodeError:  # text no store can hold (an unpaired surrogate from JSON)
        raise ValidationError("text must be valid Unicode (no unpaired surrogates)") from None


def shown(text: object, limit: int = 40) -> str:
    """`text` quoted for an error message, cut so a huge input is never echoed back."""
    if not isinstance(text, str):
        return repr(text)[:limit]
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def _check_artifacts(spec: JobSpec) -> None:
    if len(spec.artifacts) > MAX_ARTIFACT_PATHS:
        raise ValidationError(
            f"too many artifact paths ({len(spec.artifacts)} > {MAX_ARTIFACT_PATHS})"
        )
    for path in spec.artifacts:
        problem = artifact_path_problem(path)
        if problem is not None:
            raise ValidationError(problem)
    if len(spec.inputs) > MAX_INPUTS:
        raise ValidationError(f"too many inputs ({len(spec.inputs)} > {MAX_INPUTS})")
    for key in spec.inputs:
        if not isinstance(key, str) or not _INPUT_RE.fullmatch(key):
            raise ValidationError(f"invalid input {shown(key)} (expected JOB_ID/ATTEMPT)")


def check_image(image: object) -> str:
    """An image reference as Docker and Kubernetes take it ([HOST[:PORT]/]NAME[:TAG][@DIGEST]),
    else ValidationError saying what a reference looks like."""
    if not isinstance(image, str) or not image:
        raise ValidationError("image must not be empty")
    if len(image) > MAX_IMAGE or not _IMAGE_RE.fullmatch(image):
        raise ValidationError(
            f"invalid image {shown(image)}: expected [HOST[:PORT]/]NAME[:TAG][@sha256:DIGEST], "
            "NAME in lower case (e.g. node:20, registry.local:5000/team/build@sha256:...)"
        )
    return image


def input_key(job_id: str, attempt: int) -> str:
    """The key naming an attempt's artifacts in a spec's `inputs`: "JOB_ID/ATTEMPT"."""
    return f"{job_id}/{attempt}"


def parse_input_key(key: str) -> tuple[str, int]:
    """(job id, attempt) of an input key; ValueError for one that is not JOB_ID/ATTEMPT."""
    if not _INPUT_RE.fullmatch(key):
        raise ValueError(f"invalid input key {shown(key)}")
    job_id, _, attempt = key.rpartition("/")
    return job_id, int(attempt)


def artifact_path_problem(path: object) -> str | None:
    """Why `path` cannot name an artifact (relative, inside the work directory), or None."""
    if not isinstance(path, str) or not path.strip():
        return "artifact path must not be empty"
    if "\x00" in path:
        return "artifact path must not contain NUL"
    if len(path) > 1024:
        return "artifact path too long (more than 1024 characters)"
    if path.startswith(("/", "\\", "~")) or re.match(r"[A-Za-z]:", path):
        return f"artifact path {shown(path)} must be relative to the work directory"
    if ".." in re.split(r"[/\\]", path):
        return f"artifact path {shown(path)} must not contain '..'"
    return None


def _validate_spec(spec: JobSpec) -> JobSpec:
    if not spec.command or not spec.command.strip():
        raise ValidationError("command must not be empty")
    if "\x00" in spec.command or any("\x00" in a for a in spec.arguments):
        raise ValidationError("command and arguments must not contain NUL bytes")
    size = len(spec.command.encode()) + sum(len(a.encode()) for a in spec.arguments)
    if size > MAX_COMMAND_BYTES:
        raise ValidationError(f"command too large ({size} bytes > {MAX_COMMAND_BYTES})")
    if len(spec.arguments) > MAX_ARGS:
        raise ValidationError(f"too many arguments ({len(spec.arguments)} > {MAX_ARGS})")
    if len(spec.name) > MAX_NAME or "\x00" in spec.name:
        raise ValidationError(f"name must be at most {MAX_NAME} characters without NUL")
    _check_map("env", spec.env, _KEY_RE, MAX_ENV)
    _check_map("label", spec.labels, _LABEL_KEY_RE, MAX_LABELS)
    _check_sizes(spec)
    for name in spec.secrets:
        if not _KEY_RE.fullmatch(name):
            raise ValidationError(f"invalid secret name {shown(name)}")
    _check_artifacts(spec)
    if spec.image is not None:
        check_image(spec.image)
    if not 0 <= spec.cpu <= 1024:
        raise ValidationError("cpu must be between 0 and 1024 cores")
    if isinstance(spec.memory_bytes, bool) or not isinstance(spec.memory_bytes, int):
        raise ValidationError("memory must be a whole number of bytes")
    if not 0 <= spec.memory_bytes <= 1 << 50:
        raise ValidationError("memory must be between 0 and 1 PiB")
    if not 0 <= spec.timeout_s <= 30 * 86400:
        raise ValidationError("timeout must be between 0 and 30 days")
    if not 0 <= spec.max_retries <= 100:
        raise ValidationError("retries must be between 0 and 100")
    if spec.infra_retries is not None and not 0 <= spec.infra_retries <= 100:
        raise ValidationError("infra retries must be between 0 and 100")
    if not -1_000_000 <= spec.priority <= 1_000_000:
        raise ValidationError("priority must be between -1000000 and 1000000")
    return spec


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    spec: JobSpec
    state: JobState = JobState.QUEUED
    exit_code: int | None = None
    attempts: int = 0  # number of dispatches so far; the current attempt's number
    worker_id: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    reason: str = ""  # why it waits, or why it failed
    seq: int = 0  # store order (insertion), used for FIFO within a priority and for paging
    # A client's key for "submit at most once": a repeated submit with it returns this job.
    idempotency_key: str | None = None
    # A retry waiting out its backoff is not placed before this time (unix seconds).
    not_before: float | None = None
    # Requeues spent: after the job's own failures (bounded by spec.max_retries), and after
    # attempts lost to the platform (bounded by spec.infra_retries). An attempt never started
    # spends neither.
    retries_used: int = 0
    infra_retries_used: int = 0

    def with_changes(self, **changes: object) -> Job:
        return replace(self, **changes)  # type: ignore[arg-type]


def parse_duration(text: str) -> float:
    """'90', '90s', '5m', '1h30m', '250ms' -> seconds: finite and not negative."""
    text = text.strip().lower()
    if not text:
        raise ValidationError("empty duration")
    try:
        total = float(text)
    except ValueError:
        total = 0.0
        for number, unit in _DURATION_PART.findall(text):
            total += float(number) * _DURATION_UNITS[unit]
        if _DURATION_PART.sub("", text):
            raise ValidationError(
                f"invalid duration {text[:40]!r} (use e.g. 30s, 5m, 1h30m)"
            ) from None
    if not math.isfinite(total):
        raise ValidationError(f"invalid duration {text[:40]!r} (not a finite number)")
    if total < 0:
        raise ValidationError(f"invalid duration {text[:40]!r} (negative)")
    return total


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_size(text: str) -> int:
    """'512', '512M', '2Gi', '100k' -> bytes (K/M/G/T are powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*", text.lower())
    if not m:
        raise ValidationError(f"invalid size {text[:40]!r} (use e.g. 512M, 2G)")
    factor = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2)]
    number = float(m.group(1))
    if not math.isfinite(number * factor):  # so many digits that float says infinity
        raise ValidationError(f"invalid size {text[:40]!r} (too large)")
    return int(number * factor)


def log_attempt(job: Job) -> int:
    """The attempt whose log a follower should read: the coming one while the job is queued."""
    return job.attempts + 1 if job.state is JobState.QUEUED else max(job.attempts, 1)


def attempt_over(job: Job, attempt: int) -> bool:
    """True once `attempt` of `job` can produce no more log bytes."""
    current = log_attempt(job)
    return attempt < current or (attempt == current and job.state.terminal)
