"""In-memory JobStore: every record lives in this process and is gone when it ends.

For tests and throwaway runs. Operations never await midway, so on one event loop each runs
whole between any two others: a compare-and-swap needs no lock, and a write is complete when
its await returns. Not for use from several threads. The records outlive close(): a closed
store opened again still holds them, as a database would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from hodei.adapters.store.common import (
    audit_action_filter,
    check_changes,
    merge_attempt,
    newest_page,
    page_limit,
    state_values,
    transition_conflict,
)
from hodei.adapters.store.memory_schedules import MemorySchedules
from hodei.adapters.store.pipeline_rows import (
    changed_run,
    changed_step,
    check_steps,
    run_changes,
    run_not_found,
    status_values,
    step_changes,
    step_conflict,
    stored_run,
    stored_step,
    version_conflict,
)
from hodei.domain.access import AuditEntry, Role, TokenRecord
from hodei.domain.attempts import Attempt, AttemptState
from hodei.domain.job_filter import job_filter
from hodei.domain.jobs import Job, JobSpec, JobState
from hodei.domain.pipelines.model import JobStatus
from hodei.domain.pipelines.runs import (
    ACTIVE_RUN_STATES,
    PipelineRun,
    RunState,
    RunStep,
    StepUpdate,
)
from hodei.errors import ConflictError, NotFoundError, StoreError
from hodei.ports import SecretRecord

if TYPE_CHECKING:
    from hodei.ports import JobStore

__all__ = ["MemoryJobStore"]

_Record = TypeVar("_Record", Job, AuditEntry, PipelineRun)


def _same(record: _Record) -> _Record:
    return record


def _newest_first(
    records: Sequence[_Record], keep: Callable[[_Record], bool], cursor: int | None, limit: int
) -> tuple[list[_Record], int | None]:
    """A page of `records` (held in seq order, `records[i].seq == i + 1`) as list_jobs and
    list_audit return it."""
    # Seqs are dealt in order and nothing is deleted, so a cursor is a position.
    end = len(records) if cursor is None else max(0, min(len(records), int(cursor) - 1))
    found: list[_Record] = []
    for index in range(end - 1, -1, -1):
        if keep(records[index]):
            found.append(records[index])
            if len(found) > limit:  # one beyond the page: there is a next one
                break
    return newest_page(found, limit, _same)


class MemoryJobStore(MemorySchedules):
    """JobStore in this process's memory. `await open()` before use, `await close()` when done."""

    def __init__(self) -> None:
        super().__init__()
        self._open = False
        self._closed = False
        self._jobs: list[Job] = []  # by seq: the job with seq n is at n - 1
        self._position: dict[str, int] = {}  # job id -> index in _jobs
        self._keys: dict[str, str] = {}  # idempotency key -> job id
        self._attempts: dict[str, dict[int, Attempt]] = {}  # job id -> number -> record
        self._tokens: dict[str, TokenRecord] = {}
        self._audit: list[AuditEntry] = []  # by seq, like _jobs
        self._secrets: dict[str, tuple[bytes, float]] = {}  # name -> (ciphertext, updated_at)
        self._runs: list[PipelineRun] = []  # by seq, like _jobs
        self._run_position: dict[str, int] = {}  # run id -> index in _runs
        self._steps: dict[str, dict[str, RunStep]] = {}  # run id -> step id -> row, by index
        self._cache_keys: dict[str, set[tuple[str, str]]] = {}  # key -> (run id, step id)s

    def _check(self) -> None:
        if not self._open:
            state = "closed" if self._closed else "not open"
            raise StoreError(f"in-memory job store is {state}")

    # -- lifecycle

    async def open(self) -> None:
        self._open, self._closed = True, False

    async def close(self) -> None:
        """Nothing is ever under way (no operation awaits), so this only refuses new calls."""
        self._open, self._closed = False, True

    # -- jobs

    def _insert(self, job: Job) -> Job:
        if job.id in self._position:
            raise ConflictError(f"job {job.id} already exists")
        key = job.idempotency_key
        if key is not None and key in self._keys:
            raise ConflictError(f"idempotency key already used by job {self._keys[key]}")
        stored = job.with_changes(seq=len(self._jobs) + 1, state=JobState(job.state))
        self._position[job.id] = len(self._jobs)
        self._jobs.append(stored)
        if key is not None:
            self._keys[key] = job.id
        return stored

    def _job(self, job_id: str) -> Job:
        position = self._position.get(job_id)
        if position is None:
            raise NotFoundError(f"no job {job_id}")
        return self._jobs[position]

    async def create_job(self, job: Job) -> Job:
        self._check()
        return self._insert(job)

    async def create_jobs(self, jobs: Sequence[Job]) -> list[Job | ConflictError]:
        self._check()
        out: list[Job | ConflictError] = []
        for job in jobs:
            try:  # a refused job fails alone, as in the SQL stores' transaction
                out.append(self._insert(job))
            except ConflictError as exc:
                out.append(exc)
        return out

    async def job_by_idempotency_key(self, key: str) -> Job | None:
        self._check()
        job_id = self._keys.get(key)
        return self._job(job_id) if job_id is not None else None

    async def get_job(self, job_id: str) -> Job:
        self._check()
        return self._job(job_id)

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
        wanted = job_filter(state, name, labels, pipeline)
        self._check()
        return _newest_first(self._jobs, wanted.matches, cursor, page_limit(limit))

    async def pending_jobs(self, limit: int | None = None) -> list[Job]:
        self._check()
        queued = [job for job in self._jobs if job.state is JobState.QUEUED]
        queued.sort(key=lambda job: (-job.spec.priority, job.seq))
        return queued if limit is None else queued[: max(0, int(limit))]

    async def jobs_in_states(self, states: Collection[JobState]) -> list[Job]:
        self._check()
        wanted = {JobState(s) for s in states}
        return [job for job in self._jobs if job.state in wanted]

    async def transition(
        self,
        job_id: str,
        expected: Collection[JobState],
        target: JobState,
        changes: Mapping[str, Any] | None = None,
        attempt: Attempt | None = None,
        spec: JobSpec | None = None,
    ) -> Job:
        """JobStore.transition; `spec` is not needed (the stored job keeps its own).
        ValueError for a `changes` key not in MUTABLE_FIELDS."""
        checked = check_changes(changes)
        states = state_values(expected)
        new_state = JobState(target)
        self._check()
        job = self._job(job_id)
        if job.state.value not in states:
            raise transition_conflict(job_id, job.state.value, states)
        updated = job.with_changes(state=new_state, **checked)
        self._jobs[self._position[job_id]] = updated
        if attempt is not None:
            record = replace(attempt, state=AttemptState(attempt.state))
            numbered = self._attempts.setdefault(job_id, {})
            numbered[record.number] = merge_attempt(numbered.get(record.number), record)
        return updated

    async def list_attempts(self, job_id: str) -> list[Attempt]:
        self._check()
        numbered = self._attempts.get(job_id, {})
        return [numbered[number] for number in sorted(numbered)]

    # -- API tokens and the audit trail

    async def create_token(self, token: TokenRecord) -> None:
        self._check()
        if token.id in self._tokens:
            raise ConflictError(f"token {token.id} already exists")
        self._tokens[token.id] = replace(token, role=Role(token.role))

    async def get_token(self, token_id: str) -> TokenRecord | None:
        self._check()
        return self._tokens.get(token_id)

    async def list_tokens(self) -> list[TokenRecord]:
        self._check()
        return sorted(self._tokens.values(), key=lambda token: (token.created_at, token.id))

    async def revoke_token(self, token_id: str, at: float) -> TokenRecord:
        self._check()
        token = self._tokens.get(token_id)
        if token is None:
            raise NotFoundError(f"no token {token_id}")
        if token.revoked_at is None:
            token = self._tokens[token_id] = replace(token, revoked_at=at)
        return token

    async def append_audit(self, *entries: AuditEntry) -> None:
        self._check()
        for entry in entries:
            self._audit.append(replace(entry, seq=len(self._audit) + 1))

    async def list_audit(
        self,
        limit: int = 100,
        cursor: int | None = None,
        action: str | None = None,
        target: str | None = None,
    ) -> tuple[list[AuditEntry], int | None]:
        self._check()
        value, prefix = audit_action_filter(action) if action else ("", False)

        def keep(entry: AuditEntry) -> bool:
            if action and not (entry.action.startswith(value) if prefix else entry.action == value):
                return False
            return not target or entry.target == target

        return _newest_first(self._audit, keep, cursor, page_limit(limit))

    # -- secrets

    async def put_secret(self, name: str, ciphertext: bytes) -> None:
        self._check()
        self._secrets[name] = (bytes(ciphertext), time.time())

    async def get_secrets(self, names: Collection[str]) -> dict[str, bytes]:
        self._check()
        return {
            name: self._secrets[name][0] for name in sorted(set(names)) if name in self._secrets
        }

    async def list_secrets(self) -> list[SecretRecord]:
        self._check()
        return [
            SecretRecord(name=name, updated_at=self._secrets[name][1])
            for name in sorted(self._secrets)
        ]

    async def delete_secret(self, name: str) -> None:
        self._check()
        if self._secrets.pop(name, None) is None:
            raise NotFoundError(f"no secret {name}")

    # -- pipeline runs (values kept as the SQL stores give them back: pipeline_rows)

    def _pipeline_run(self, run_id: str) -> PipelineRun:
        position = self._run_position.get(run_id)
        if position is None:
            raise run_not_found(run_id)
        return self._runs[position]

    def _put_step(self, step: RunStep, old_key: str | None = None) -> None:
        self._steps[step.run_id][step.step_id] = step
        where = (step.run_id, step.step_id)
        if old_key is not None and old_key != step.cache_key:
            self._cache_keys[old_key].discard(where)
        if step.cache_key is not None:
            self._cache_keys.setdefault(step.cache_key, set()).add(where)

    async def create_run(self, run: PipelineRun, steps: Sequence[RunStep]) -> PipelineRun:
        check_steps(run, steps)
        self._check()
        if run.id in self._run_position:
            raise ConflictError(f"run {run.id} already exists")
        stored = stored_run(run).with_changes(seq=len(self._runs) + 1)
        self._run_position[run.id] = len(self._runs)
        self._runs.append(stored)
        self._steps[run.id] = {}
        for step in sorted(steps, key=lambda s: s.index):  # dicts keep this order
            self._put_step(stored_step(step))
        return stored

    async def get_run(self, run_id: str) -> PipelineRun:
        self._check()
        return self._pipeline_run(run_id)

    async def list_runs(
        self, state: RunState | None = None, limit: int = 100, cursor: int | None = None
    ) -> tuple[list[PipelineRun], int | None]:
        self._check()
        wanted = RunState(state) if state is not None else None
        return _newest_first(
            self._runs,
            lambda run: wanted is None or run.state is wanted,
            cursor,
            page_limit(limit),
        )

    async def active_runs(self) -> list[PipelineRun]:
        self._check()
        return [run for run in self._runs if run.state in ACTIVE_RUN_STATES]

    async def update_run(
        self, run_id: str, version: int, changes: Mapping[str, Any]
    ) -> PipelineRun:
        """PipelineStore.update_run. ValueError for a field `changes` may not set."""
        columns = run_changes(changes)
        self._check()
        run = self._pipeline_run(run_id)
        if run.version != version:
            raise version_conflict(run_id, run.version, version)
        updated = self._runs[self._run_position[run_id]] = changed_run(run, columns)
        return updated

    async def run_steps(self, run_id: str) -> list[RunStep]:
        self._check()
        return list(self._steps.get(run_id, {}).values())

    async def update_steps(
        self, run_id: str, updates: Sequence[StepUpdate]
    ) -> list[RunStep | ConflictError]:
        """PipelineStore.update_steps. ValueError for a field an update's `changes` may not
        set (then nothing is applied)."""
        checked = [(u, step_changes(u.changes), set(status_values(u.expected))) for u in updates]
        self._check()
        steps = self._steps.get(run_id, {})
        out: list[RunStep | ConflictError] = []
        for update, columns, statuses in checked:
            step = steps.get(update.step_id)
            if (
                step is None
                or step.status.value not in statuses
                or (step.generation != update.generation)
            ):
                found = (step.status.value, step.generation) if step is not None else None
                out.append(step_conflict(run_id, update, found))
                continue
            updated = changed_step(step, columns)
            self._put_step(updated, step.cache_key)
            out.append(updated)
        return out

    async def cached_step(self, cache_key: str) -> RunStep | None:
        """The SQL stores' order: finished_at newest first (None last), then ids, highest
        first."""
        self._check()
        sources = [
            step
            for run_id, step_id in self._cache_keys.get(cache_key, ())
            if (step := self._steps[run_id][step_id]).status is JobStatus.SUCCEEDED
            and step.cached_from is None
        ]
        return max(
            sources,
            key=lambda s: (s.finished_at is not None, s.finished_at or 0.0, s.run_id, s.step_id),
            default=None,
        )


if TYPE_CHECKING:  # mypy proves the class is a whole JobStore
    _conforms: JobStore = MemoryJobStore()
