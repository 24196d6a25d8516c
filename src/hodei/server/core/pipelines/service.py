"""The pipeline use cases both APIs (REST and gRPC) share: start, read, list, cancel,
approve and retry runs. Each records what it did in the audit trail and leaves the deciding
to the engine."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from hodei.domain.pipelines import (
    DEFAULT_LIMITS,
    JobStatus,
    Limits,
    build_dag,
    parse_pipeline,
    resolve_params,
    retry_plan,
)
from hodei.domain.pipelines.runs import (
    PipelineRun,
    RunState,
    RunStep,
    StepUpdate,
    new_run_id,
)
from hodei.errors import ConflictError, NotFoundError, ValidationError
from hodei.ports import JobStore
from hodei.server.core.pipelines.engine import PipelineEngine
from hodei.server.security.audit import Auditor

# The statuses a retry resets: every one but running (a pending row is re-run too: a crash may
# have left it between a retry's steps and its run).
_RESETTABLE = frozenset(
    {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.SKIPPED,
        JobStatus.PENDING,
    }
)
_RESET: dict[str, object] = {
    "status": JobStatus.PENDING,
    "job_id": None,
    "attempt": 0,
    "reason": "",
    "outputs": {},
    "cache_key": None,
    "cached_from": None,
    "artifact_sha256": None,
    "artifact_bytes": 0,
    "started_at": None,
    "finished_at": None,
}


class Pipelines:
    def __init__(
        self,
        store: JobStore,
        engine: PipelineEngine,
        auditor: Auditor,
        *,
        limits: Limits = DEFAULT_LIMITS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.engine = engine
        self.auditor = auditor
        self.limits = limits
        self._clock = clock

    async def run(
        self,
        source: str,
        params: Mapping[str, str],
        *,
        filename: str = "pipeline.yaml",
        queued_by: str = "",
        no_cache: bool = False,
        run_id: str | None = None,
    ) -> tuple[PipelineRun, list[RunStep]]:
        """Check the file and its params, store the run with every step pending, and start
        the steps that need nothing. PipelineError / ValidationError before anything is
        stored. `run_id`: the id a caller derived (a schedule's fire), so that a second try
        is refused by the store (ConflictError) instead of starting a second run."""
        pipeline = parse_pipeline(source, limits=self.limits, filename=filename)
        values = resolve_params(pipeline, params)
        names = {name for step in pipeline.steps.values() for name in step.secrets}
        known = await self.store.get_secrets(names) if names else {}
        if missing := sorted(names - set(known)):
            raise ValidationError("unknown secret(s): " + ", ".join(missing))
        dag = build_dag(pipeline)
        run = PipelineRun(
            id=run_id or new_run_id(),
            name=pipeline.name,
            source=source,
            filename=filename,
            params=values,
            queued_by=queued_by,
            created_at=self._clock(),
            no_cache=no_cache,
        )
        rows = [
            RunStep(run.id, job.id, index, job.step_name)
            for index, job in enumerate(dag.all_jobs())
        ]
        run = await self.store.create_run(run, rows)
        await self.auditor.record(queued_by, "pipeline.run", run.id, pipeline.name)
        self.engine.remember(run.id, dag)
        await self.engine.advance(run.id)
        return await self.get(run.id)

    async def get(self, run_id: str) -> tuple[PipelineRun, list[RunStep]]:
        run = await self.store.get_run(run_id)
        return run, await self.store.run_steps(run_id)

    async def list(
        self, state: RunState | None, limit: int, cursor: int | None
    ) -> tuple[list[PipelineRun], int | None]:
        return await self.store.list_runs(state, limit, cursor)

    async def cancel(self, run_id: str, by: str) -> PipelineRun:
        """Nothing more starts; running steps are cancelled, pending ones skipped."""
        for _ in range(5):
            run = await self.store.get_run(run_id)
            if run.state.terminal:
                raise ConflictError(f"run {run_id} already ended ({run.state})")
            if run.cancelled_by is not None:
                return run
            try:
                await self.store.update_run(run_id, run.version, {"cancelled_by": by or "a user"})
                break
            except ConflictError:
                continue
        else:
            raise ConflictError(f"run {run_id} keeps changing; try again")
        await self.auditor.record(by, "pipeline.cancel", run_id)
        await self.engine.advance(run_id)
        return await self.store.get_run(run_id)

    async def approve(self, run_id: str, step: str, by: str) -> PipelineRun:
        """Let a manual step start (once what it needs has passed)."""
        for _ in range(5):
            run = await self.store.get_run(run_id)
            dag = self.engine.dag_of(run)
            spec = dag.pipeline.steps.get(step)
            if spec is None:
                raise NotFoundError(f"run {run_id} has no step {step!r}")
            if spec.when.value != "manual":
                raise ConflictError(f"step {step!r} is not a manual step (when: {spec.when})")
            if run.state.terminal or run.cancelled_by is not None:
                raise ConflictError(f"run {run_id} has ended ({run.state})")
            if step in run.approved:
                raise ConflictError(f"step {step!r} of run {run_id} is already approved")
            try:
                await self.store.update_run(
                    run_id, run.version, {"approved": (*run.approved, step)}
                )
                break
            except ConflictError:
                continue
        else:
            raise ConflictError(f"run {run_id} keeps changing; try again")
        await self.auditor.record(by, "pipeline.approve", run_id, step)
        await self.engine.advance(run_id)
        return await self.store.get_run(run_id)

    async def retry(self, run_id: str, by: str) -> PipelineRun:
        """Run again the steps that failed, were cancelled or skipped (and all after them);
        succeeded steps keep their results and artifacts."""
        run = await self.store.get_run(run_id)
        if not run.state.terminal:
            raise ConflictError(f"run {run_id} is {run.state}; only a finished run can be retried")
        rows = {row.step_id: row for row in await self.store.run_steps(run_id)}
        dag = self.engine.dag_of(run)
        plan = retry_plan(dag, {k: r.status for k, r in rows.items()})
        if not plan.rerun:
            raise ConflictError(f"run {run_id} succeeded: there is nothing to retry")
        generation = run.generation + 1
        updates = [
            StepUpdate(job, _RESETTABLE, rows[job].generation, {**_RESET, "generation": generation})
            for job in plan.rerun
        ]
        # Steps first, then the run: a crash in between leaves a finished run whose retry
        # can simply be asked again (a pending step counts as one to re-run).
        await self.store.update_steps(run_id, updates)
        approved = tuple(step for step in run.approved if step not in plan.steps)
        changes = {
            "state": RunState.RUNNING,
            "generation": generation,
            "finished_at": None,
            "reason": "",
            "cancelled_by": None,
            "approved": approved,
        }
        await self.store.update_run(run_id, run.version, changes)
        detail = f"generation {generation}: {len(plan.rerun)} step job(s) again"
        await self.auditor.record(by, "pipeline.retry", run_id, detail)
        await self.engine.advance(run_id)
        return await self.store.get_run(run_id)
