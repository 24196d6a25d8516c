"""Ports: the Protocols that infrastructure adapters implement.

A port exists where there are (or will soon be) two adapters: JobStore (SQLite, PostgreSQL,
memory), LogStore (files, shared storage), WorkerProvider (local, docker, kubernetes, microvm),
Cluster (PostgreSQL LISTEN/NOTIFY; a single server on SQLite needs none). JobStore is made of
focused parts (StoreLifecycle, JobRecords, TokenStore, AuditStore, SecretStore) so that a
consumer of one part asks for that part only.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hodei.domain.access import AuditEntry, TokenRecord
from hodei.domain.attempts import Attempt
from hodei.domain.cluster import ClusterEvent
from hodei.domain.jobs import Job, JobSpec, JobState
from hodei.domain.pipelines.runs import PipelineRun, RunState, RunStep, StepUpdate
from hodei.domain.schedules.model import Fire, FireOutcome, Schedule
from hodei.domain.templates import TemplateRecord
from hodei.errors import ConflictError


@dataclass(frozen=True, slots=True)
class SecretRecord:
    name: str
    updated_at: float


class StoreLifecycle(Protocol):
    """Opening and closing a store. Every other call raises StoreError while it is not open
    (the message says "not open", or "closed" once closed)."""

    async def open(self) -> None:
        """Make the store ready; opening an open store does nothing. StoreError if its
        database cannot be used (or is from a newer Hodei)."""
        ...

    async def close(self) -> None:
        """Finish every operation under way, then release the database; closing twice does
        nothing. A closed store may be opened again and still holds its records."""
        ...


class JobRecords(Protocol):
    """Jobs and their attempt records."""

    async def create_job(self, job: Job) -> Job:
        """Insert a new job; returns it with `seq` set. ConflictError if the id exists, or its
        idempotency key is already another job's."""
        ...

    async def create_jobs(self, jobs: Sequence[Job]) -> list[Job | ConflictError]:
        """Insert many new jobs in one transaction, in order: each comes back with `seq` set,
        or as the ConflictError that refused it alone (as create_job would)."""
        ...

    async def job_by_idempotency_key(self, key: str) -> Job | None:
        """The job created with this idempotency key, if any."""
        ...

    async def get_job(self, job_id: str) -> Job:
        """NotFoundError if there is no such job."""
        ...

    async def list_jobs(
        self,
        state: JobState | None = None,
        limit: int = 100,
        cursor: int | None = None,
        *,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        pipeline: str | None = None,
    ) -> tuple[list[Job], int | None]:
        """Newest first. `cursor` is the `seq` below which to continue; returns (items, next).
        Only jobs meeting every filter given (domain.job_filter): `name` a substring of the
        job's name (ASCII letters in either case), `labels` all on the job, `pipeline` a run
        id (its steps' jobs). ValidationError for a filter no job could meet (a malformed
        label key, a string that is not a run id)."""
        ...

    async def pending_jobs(self, limit: int | None = None) -> list[Job]:
        """Queued jobs in dispatch order: higher priority first, then oldest first."""
        ...

    async def jobs_in_states(self, states: Collection[JobState]) -> list[Job]:
        """Every job in one of `states`, oldest first (used at start-up to rebuild queues)."""
        ...

    async def transition(
        self,
        job_id: str,
        expected: Collection[JobState],
        target: JobState,
        changes: Mapping[str, Any] | None = None,
        attempt: Attempt | None = None,
        spec: JobSpec | None = None,
    ) -> Job:
        """Compare-and-swap: set state=target (and the given Job fields) only if the current
        state is in `expected`. Returns the updated job. ConflictError when the state was not in
        `expected` (the message names the actual state), NotFoundError when there is no job.
        With `attempt`, that attempt record is written (upserted by job id and number; its None
        fields keep the stored values) in the same transaction, only if the change applies.
        `spec`: the job's spec if the caller has it (specs never change), so the store need
        not decode it again."""
        ...

    async def list_attempts(self, job_id: str) -> list[Attempt]:
        """The job's attempt records, first attempt first (empty for an unknown job)."""
        ...


class TokenStore(Protocol):
    """API token records (hashes only, never the secrets)."""

    async def create_token(self, token: TokenRecord) -> None:
        """ConflictError if the id exists."""
        ...

    async def get_token(self, token_id: str) -> TokenRecord | None:
        """The token's record, or None if there is no such token."""
        ...

    async def list_tokens(self) -> list[TokenRecord]:
        """Oldest first, revoked ones included."""
        ...

    async def revoke_token(self, token_id: str, at: float) -> TokenRecord:
        """NotFoundError if there is no such token; revoking twice keeps the first time."""
        ...


class AuditStore(Protocol):
    """The audit trail: entries numbered by `seq` in the order they were stored."""

    async def append_audit(self, *entries: AuditEntry) -> None:
        """Store the entries, in order, in one transaction."""
        ...

    async def list_audit(
        self,
        limit: int = 100,
        cursor: int | None = None,
        action: str | None = None,
        target: str | None = None,
    ) -> tuple[list[AuditEntry], int | None]:
        """Newest first; `action` matches exactly or as a prefix ending in '.' ('job.')."""
        ...


class SecretStore(Protocol):
    """Secret ciphertexts by name (the store never sees a secret's value)."""

    async def put_secret(self, name: str, ciphertext: bytes) -> None:
        """Create or replace the secret; its `updated_at` becomes now (seconds since the
        epoch)."""
        ...

    async def get_secrets(self, names: Collection[str]) -> dict[str, bytes]:
        """Ciphertexts of the named secrets that exist (missing names are simply absent)."""
        ...

    async def list_secrets(self) -> list[SecretRecord]:
        """Every secret's name and update time (never its ciphertext), by name."""
        ...

    async def delete_secret(self, name: str) -> None:
        """NotFoundError if there is no such secret."""
        ...


class PipelineStore(Protocol):
    """Pipeline runs and their step rows. Runs change by compare-and-swap on `version`, steps
    by compare-and-swap on (status, generation): several servers may decide the same thing,
    and only the first write of it applies."""

    async def create_run(self, run: PipelineRun, steps: Sequence[RunStep]) -> PipelineRun:
        """Insert a run and all its steps in one transaction; returns the run with `seq` set.
        ConflictError if the id exists."""
        ...

    async def get_run(self, run_id: str) -> PipelineRun:
        """NotFoundError if there is no such run."""
        ...

    async def list_runs(
        self, state: RunState | None = None, limit: int = 100, cursor: int | None = None
    ) -> tuple[list[PipelineRun], int | None]:
        """Newest first. `cursor` is the `seq` below which to continue; returns (items, next)."""
        ...

    async def active_runs(self) -> list[PipelineRun]:
        """Runs that are running or waiting, oldest first (resumed at start-up)."""
        ...

    async def update_run(
        self, run_id: str, version: int, changes: Mapping[str, Any]
    ) -> PipelineRun:
        """Apply `changes` (PipelineRun fields, not id/seq/version/source) only if the stored
        version is `version`; the version becomes version + 1. ConflictError if it is not (the
        message names the stored version), NotFoundError when there is no run."""
        ...

    async def run_steps(self, run_id: str) -> list[RunStep]:
        """The run's step rows by index (empty for an unknown run)."""
        ...

    async def update_steps(
        self, run_id: str, updates: Sequence[StepUpdate]
    ) -> list[RunStep | ConflictError]:
        """Apply each update in one transaction, in order: the updated row, or a ConflictError
        for an update whose step's status or generation was not the expected one (or whose
        step does not exist); the others still apply."""
        ...

    async def cached_step(self, cache_key: str) -> RunStep | None:
        """The most recently finished succeeded step with this cache key that ran itself (its
        `cached_from` is None), or None."""
        ...


class ScheduleStore(Protocol):
    """Schedules and their fires. A schedule changes by compare-and-swap on `version`; a fire
    that starts something is inserted in the same transaction as the schedule's change that
    claims it (claim_fires), so the next fire time and the fire are committed together."""

    async def create_schedule(self, schedule: Schedule) -> Schedule:
        """Insert a schedule; ConflictError if its id or name exists."""
        ...

    async def get_schedule(self, name: str) -> Schedule:
        """By name; NotFoundError if there is none."""
        ...

    async def list_schedules(self) -> list[Schedule]:
        """Every schedule, by name."""
        ...

    async def update_schedule(
        self, schedule_id: str, version: int, changes: Mapping[str, Any]
    ) -> Schedule:
        """Apply `changes` (Schedule fields but id, version and created_at) only if the stored
        version is `version`, which becomes version + 1. ConflictError if it is not (naming the
        stored version), NotFoundError when there is no such schedule."""
        ...

    async def claim_fires(
        self, schedule_id: str, version: int, changes: Mapping[str, Any], fires: Sequence[Fire]
    ) -> Schedule:
        """update_schedule and the insert of `fires`, in one transaction: all or nothing.
        ConflictError if the version moved or a fire's id exists."""
        ...

    async def delete_schedule(self, schedule_id: str) -> None:
        """The schedule and its fires; NotFoundError if there is none."""
        ...

    async def list_fires(
        self, schedule_id: str, limit: int = 50, before: float | None = None
    ) -> list[Fire]:
        """The schedule's fires, newest `scheduled_at` first, below `before` if given."""
        ...

    async def active_fires(self) -> list[Fire]:
        """Fires starting or started whose end is not recorded (`result` empty), oldest
        first."""
        ...

    async def update_fire(
        self,
        fire_id: str,
        outcomes: Collection[FireOutcome],
        changes: Mapping[str, Any],
        *,
        unsettled: bool = False,
    ) -> Fire:
        """Apply `changes` (outcome, reason, job_id, run_id, result) only if the fire's outcome
        is one of `outcomes` (and, with `unsettled`, its result is still empty). ConflictError
        if not, NotFoundError for an unknown fire."""
        ...


class TemplateStore(Protocol):
    """Job templates, every version kept."""

    async def add_template(self, record: TemplateRecord) -> TemplateRecord:
        """Insert one version; ConflictError if that (name, version) exists."""
        ...

    async def get_template(self, name: str, version: int | None = None) -> TemplateRecord:
        """That version, or the newest; NotFoundError if there is none."""
        ...

    async def list_templates(self) -> list[TemplateRecord]:
        """The newest version of each template, by name."""
        ...

    async def template_versions(self, name: str) -> list[TemplateRecord]:
        """Every version of one template, newest first (empty if unknown)."""
        ...

    async def delete_template(self, name: str) -> None:
        """Every version; NotFoundError if there is none."""
        ...


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    job_id: str
    attempt: int
    sha256: str  # of the archive (a tar file)
    size: int  # bytes
    created_at: float


class ArtifactUpload(Protocol):
    """An archive being received, chunk by chunk, at increasing offsets."""

    def write(self, offset: int, data: bytes) -> None:
        """Write `data` at `offset`. An offset other than the bytes written so far restarts
        the upload at 0 (offset 0) or raises ValueError. ValueError past the size limit."""
        ...

    def commit(self, sha256: str, size: int) -> ArtifactInfo:
        """Check size and checksum, make the archive durable and visible; ValueError if they
        do not match what was written (nothing is kept)."""
        ...

    def abort(self) -> None: ...


class ArtifactStore(Protocol):
    """Artifact archives and outputs of job attempts, as files beside the logs."""

    def begin(self, job_id: str, attempt: int, max_bytes: int) -> ArtifactUpload: ...

    def info(self, job_id: str, attempt: int) -> ArtifactInfo | None:
        """The committed archive of that attempt, or None."""
        ...

    def latest(self, job_id: str) -> ArtifactInfo | None:
        """The committed archive of the job's latest attempt that has one, or None."""
        ...

    def read(self, job_id: str, attempt: int, offset: int = 0, limit: int = -1) -> bytes: ...

    def put_outputs(self, job_id: str, attempt: int, data: bytes) -> None:
        """Store an attempt's outputs file durably (replacing an earlier copy)."""
        ...

    def outputs(self, job_id: str, attempt: int) -> bytes | None: ...

    def expire(self, before: float) -> int:
        """Delete archives and outputs created before `before`; returns how many archives."""
        ...


class JobStore(
    StoreLifecycle,
    JobRecords,
    PipelineStore,
    ScheduleStore,
    TemplateStore,
    TokenStore,
    AuditStore,
    SecretStore,
    Protocol,
):
    """The whole store. Every write is committed (group commit) before its await returns:
    SQLite and PostgreSQL keep it across restarts, the memory store for as long as it lives."""


class LogStore(Protocol):
    """Append-only byte logs, one per (job, attempt). Offsets are byte positions."""

    def append(self, job_id: str, attempt: int, data: bytes) -> int:
        """Append and return the new end offset. The bytes survive a crash of the process."""
        ...

    def read(self, job_id: str, attempt: int, offset: int = 0, limit: int = -1) -> bytes:
        """Bytes from `offset`, at most `limit` (-1: all). Empty when nothing is stored."""
        ...

    def size(self, job_id: str, attempt: int) -> int: ...

    def seal(self, job_id: str, attempt: int) -> None:
        """The attempt has ended: flush to stable storage and release open handles."""
        ...

    def close(self) -> None: ...


@dataclass(slots=True)
class WorkerLaunch:
    """What a provider needs to start one worker that will register with `otp`."""

    worker_id: str
    otp: str
    server_url: str
    labels: dict[str, str] = field(default_factory=dict)
    slots: int = 1
    cpu: float = 0.0  # the resources of the job it is started for (0 = no request); container
    memory_bytes: int = 0  # providers turn them into limits
    env: dict[str, str] = field(default_factory=dict)  # for the agent, e.g. its TLS settings
    # The job's image to start the worker in, the agent injected (None: the worker image).
    image: str | None = None


class WorkerProvider(Protocol):
    name: str
    runs_images: bool  # whether it can start a worker in a job's own image

    async def start(self) -> None:
        """Reconcile what a previous server run left behind: adopt its workers still running
        (their agents reconnect with their jobs) and remove the rest; an adopted worker that
        has not reconnected (see `connected`) within the grace period is terminated."""
        ...

    def connected(self, worker_id: str) -> None:
        """The server has a session with this worker (it registered, or reconnected after a
        restart): an adopted worker is kept."""
        ...

    async def provision(self, launch: WorkerLaunch) -> None:
        """Start one worker; returns once it is launched (it registers on its own). Raises
        ProviderError, or ImageUnavailable when `launch.image` cannot be had at all."""
        ...

    async def terminate(self, worker_id: str) -> None: ...

    async def stop(self) -> None:
        """Terminate every worker this provider started."""
        ...


class Cluster(Protocol):
    """Servers sharing one store (PostgreSQL): events between them, liveness, worker homes."""

    instance_id: str

    async def start(
        self, on_event: Callable[[ClusterEvent], None], on_reconnect: Callable[[], None]
    ) -> None: ...

    def publish(self, event: ClusterEvent) -> None: ...

    async def worker_connected(self, worker_id: str) -> None: ...

    async def workers_elsewhere(self) -> set[str]: ...

    async def orphaned_jobs(self, grace_s: float) -> dict[str, list[str]]: ...

    async def forget_server(self, server_id: str) -> None: ...

    async def stop(self) -> None: ...
