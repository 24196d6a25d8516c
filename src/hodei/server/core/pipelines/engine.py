"""The pipeline engine: starts runs, and advances each run when one of its steps' jobs ends.

Advancing a run is a pass over its stored rows: record the ends of its steps' jobs, ask the
domain (hodei.domain.pipelines) what to skip and what may start, claim each step to start by
compare-and-swap, then queue its job under the step's deterministic id. Every write is a
compare-and-swap and every job id is claimed once, so any server may advance any run at any
time (after a crash, or two servers hearing of the same job) and a step still starts at most
once per generation: a pass that lost a race simply reads again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from hodei.domain.jobs import Job
from hodei.domain.pipelines import (
    Dag,
    JobStatus,
    Limits,
    build_dag,
    parse_pipeline,
    ready,
    run_status,
    to_skip,
)
from hodei.domain.pipelines.runs import (
    PipelineRun,
    RunState,
    RunStep,
    StepUpdate,
    parse_step_job_id,
    run_state_of,
    step_job_id,
)
from hodei.errors import ConflictError, NotFoundError, StoreError, ValidationError
from hodei.ports import ArtifactStore, JobStore
from hodei.server.core.background import Background
from hodei.server.core.bus import EventBus, JobChanged, RunChanged
from hodei.server.core.orchestrator import Orchestrator
from hodei.server.core.pipelines.steps import missing_inputs, prepare, settled

log = logging.getLogger(__name__)

PENDING = frozenset({JobStatus.PENDING})
RUNNING = frozenset({JobStatus.RUNNING})
_MAX_PASSES = 16  # a pass that wrote something is followed by one that sees its effect


class PipelineEngine:
    def __init__(
        self,
        store: JobStore,
        orchestrator: Orchestrator,
        cancel_job: Callable[[str], Awaitable[Job]],
        artifacts: ArtifactStore,
        bus: EventBus,
        background: Background,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.orch = orchestrator
        self._cancel_job = cancel_job
        self.artifacts = artifacts
        self.bus = bus
        self._background = background
        self._clock = clock
        self._dags: OrderedDict[str, Dag] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._poked: set[str] = set()
        # Jobs of steps seen ending, by run, not yet recorded in their step rows: a pass
        # settles these without reading every running step's job. None: read them all.
        self._ended: dict[str, dict[str, Job] | None] = {}

    # -- advancing -------------------------------------------------------------------------

    def on_job_changed(self, event: JobChanged) -> None:
        if not event.job.state.terminal:
            return
        parsed = parse_step_job_id(event.job.id)
        if parsed is None:
            return
        run_id = parsed[0]
        ended = self._ended.setdefault(run_id, {})
        if ended is not None:
            ended[event.job.id] = event.job
        self.poke(run_id, full=False)

    def poke(self, run_id: str, *, full: bool = True) -> None:
        """Advance the run soon (once, however often it is poked meanwhile); `full`: look at
        every running step's job, not only those seen ending."""
        if full:
            self._ended[run_id] = None
        if run_id in self._poked:
            return
        self._poked.add(run_id)
        self._background.spawn(self._advance_poked(run_id))

    async def keep_up(self, every_s: float, artifact_retention_s: float) -> None:
        """Forever: now and then advance every active run (making up for an event lost between
        servers) and delete artifacts older than the retention."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.resume()
                expired = await asyncio.to_thread(
                    self.artifacts.expire, self._clock() - artifact_retention_s
                )
                if expired:
                    log.info("deleted %d expired artifact archive(s)", expired)
            except (StoreError, OSError) as exc:
                log.warning("pipeline upkeep failed (%s); trying again later", exc)

    async def resume(self) -> int:
        """At start: advance every run that was active (a crash may have stopped it mid-way)."""
        runs = await self.store.active_runs()
        for run in runs:
            self.poke(run.id)
        return len(runs)

    async def _advance_poked(self, run_id: str) -> None:
        try:
            async with self._lock(run_id):
                self._poked.discard(run_id)
                await self._advance(run_id)
        except (StoreError, ConflictError) as exc:
            log.warning("run %s: could not advance (%s); trying again shortly", run_id, exc)
            await asyncio.sleep(1.0)
            self.poke(run_id)
        except Exception:
            log.exception("run %s: advancing failed", run_id)
        finally:
            self._forget_lock(run_id)

    async def advance(self, run_id: str) -> None:
        """Advance the run now, until nothing more can be decided."""
        try:
            async with self._lock(run_id):
                await self._advance(run_id)
        finally:
            self._forget_lock(run_id)

    def _lock(self, run_id: str) -> asyncio.Lock:
        return self._locks.setdefault(run_id, asyncio.Lock())

    def _forget_lock(self, run_id: str) -> None:
        lock = self._locks.get(run_id)
        if lock is not None and not lock.locked() and run_id not in self._poked:
            del self._locks[run_id]

    async def _advance(self, run_id: str) -> None:
        for _ in range(_MAX_PASSES):
            ended = self._ended.pop(run_id, None) if run_id in self._ended else {}
            run = await self.store.get_run(run_id)
            if run.state.terminal:
                return
            rows = {row.step_id: row for row in await self.store.run_steps(run_id)}
            dag = self.dag_of(run)
            try:
                written = await self._pass(run, dag, rows, ended)
            except BaseException:
                self._ended[run_id] = None  # what we took is not recorded: look again
                raise
            for row in written:
                rows[row.step_id] = row
            concluded = await self._conclude(run, dag, rows)
            if written or concluded is not run:
                self.bus.publish(RunChanged(concluded, tuple(written)))
            if not written:
                return

    async def _pass(
        self,
        run: PipelineRun,
        dag: Dag,
        rows: dict[str, RunStep],
        ended: Mapping[str, Job] | None,
    ) -> list[RunStep]:
        written = await self._settle(run, dag, rows, ended)
        for row in written:
            rows[row.step_id] = row
        statuses = {key: row.status for key, row in rows.items()}
        if run.cancelled_by is not None:
            return written + await self._wind_down(run, rows)
        skips = [
            StepUpdate(
                skip.job_id,
                PENDING,
                rows[skip.job_id].generation,
                {"status": JobStatus.SKIPPED, "reason": skip.reason, "finished_at": self._clock()},
            )
            for skip in to_skip(dag, statuses)
        ]
        written += await self._apply(run.id, skips)
        for row in written:
            rows[row.step_id] = row
        statuses = {key: row.status for key, row in rows.items()}
        starting = [rows[job.id] for job in ready(dag, statuses, run.approved)]
        written += await self._start(run, dag, rows, starting)
        return written

    async def _settle(
        self,
        run: PipelineRun,
        dag: Dag,
        rows: Mapping[str, RunStep],
        ended: Mapping[str, Job] | None,
    ) -> list[RunStep]:
        """Record the ends of running steps' jobs (those in `ended`, or, when None, of every
        running step, read from the store); queue a claimed step's job that the server which
        claimed it did not live to queue."""
        running = [row for row in rows.values() if row.status is JobStatus.RUNNING and row.job_id]
        found: Sequence[Job | BaseException]
        if ended is not None:
            running = [row for row in running if row.job_id in ended]
            found = [ended[row.job_id or ""] for row in running]
        else:
            found = await asyncio.gather(
                *(self.store.get_job(row.job_id or "") for row in running),
                return_exceptions=True,
            )
        updates: list[StepUpdate] = []
        for row, job in zip(running, found, strict=True):
            if isinstance(job, NotFoundError):
                await self._submit(run, dag, rows, row)
            elif isinstance(job, BaseException):
                raise job
            elif job.state.terminal:
                declared = dag.step(row.step).outputs
                updates.append(
                    StepUpdate(
                        row.step_id, RUNNING, row.generation, settled(job, declared, self.artifacts)
                    )
                )
        return await self._apply(run.id, updates)

    async def _wind_down(self, run: PipelineRun, rows: Mapping[str, RunStep]) -> list[RunStep]:
        reason = f"the run was cancelled by {run.cancelled_by}"
        now = self._clock()
        skips = [
            StepUpdate(
                row.step_id,
                PENDING,
                row.generation,
                {"status": JobStatus.SKIPPED, "reason": reason, "finished_at": now},
            )
            for row in rows.values()
            if row.status is JobStatus.PENDING
        ]
        for row in rows.values():
            if row.status is JobStatus.RUNNING and row.job_id:
                # It may have ended meanwhile, or not be queued yet: a later pass settles it.
                with contextlib.suppress(ConflictError, NotFoundError):
                    await self._cancel_job(row.job_id)
        return await self._apply(run.id, skips)

    async def _start(
        self, run: PipelineRun, dag: Dag, rows: Mapping[str, RunStep], starting: Sequence[RunStep]
    ) -> list[RunStep]:
        claims: list[StepUpdate] = []
        done: list[StepUpdate] = []
        now = self._clock()
        for row in starting:
            job = dag.job(row.step_id)
            try:
                prepared = prepare(run, dag, job, rows)
                if missing := missing_inputs(prepared.spec, self.artifacts):
                    raise ValidationError(
                        f"input artifact {missing[0]} is gone (expired or deleted)"
                    )
            except ValidationError as exc:
                done.append(_failed(row, f"cannot run: {exc.message}", now))
                continue
            hit = await self._cached(prepared.cache_key)
            if hit is not None:
                done.append(_from_cache(row, hit, prepared.cache_key, now))
                continue
            job_id = step_job_id(run.id, row.index, row.generation)
            changes: dict[str, object] = {
                "status": JobStatus.RUNNING,
                "job_id": job_id,
                "started_at": now,
                "cache_key": prepared.cache_key,
            }
            claims.append(StepUpdate(row.step_id, PENDING, row.generation, changes))
        written = await self._apply(run.id, done)
        claimed = await self._apply(run.id, claims)
        # Queue the claimed steps' jobs together: the store commits them as one group.
        await asyncio.gather(*(self._submit(run, dag, rows, row) for row in claimed))
        return written + claimed

    async def _submit(
        self, run: PipelineRun, dag: Dag, rows: Mapping[str, RunStep], row: RunStep
    ) -> None:
        """Queue the job of a claimed step (its id is the claim's: a second try is refused)."""
        assert row.job_id is not None
        try:
            prepared = prepare(run, dag, dag.job(row.step_id), rows)
            await self.orch.submit_step(prepared.spec, row.job_id)
        except ConflictError:
            pass  # queued already (by us before a crash, or by another server)
        except ValidationError as exc:
            await self._apply(
                run.id, [_failed(row, f"cannot run: {exc.message}", self._clock(), RUNNING)]
            )

    async def _cached(self, key: str | None) -> RunStep | None:
        if key is None:
            return None
        hit = await self.store.cached_step(key)
        if hit is None or not hit.job_id:
            return None
        if hit.artifact_sha256 and self.artifacts.info(hit.job_id, hit.attempt) is None:
            return None  # its artifacts expired: run the step again
        return hit

    async def _conclude(
        self, run: PipelineRun, dag: Dag, rows: Mapping[str, RunStep]
    ) -> PipelineRun:
        statuses = {key: row.status for key, row in rows.items()}
        state = run_state_of(run_status(dag, statuses, run.approved))
        if run.cancelled_by is not None and state.terminal:
            state = RunState.CANCELLED
        if state is run.state:
            return run
        changes: dict[str, object] = {"state": state}
        if state.terminal:
            changes["finished_at"] = self._clock()
            changes["reason"] = _run_reason(run, state, rows.values())
        try:
            return await self.store.update_run(run.id, run.version, changes)
        except ConflictError:
            return run  # changed meanwhile (a cancel, an approval): the next pass decides

    async def _apply(self, run_id: str, updates: Sequence[StepUpdate]) -> list[RunStep]:
        if not updates:
            return []
        results = await self.store.update_steps(run_id, updates)
        return [row for row in results if isinstance(row, RunStep)]

    def dag_of(self, run: PipelineRun) -> Dag:
        """The run's DAG, built from its stored file once and kept for the recent runs."""
        dag = self._dags.get(run.id)
        if dag is not None:
            self._dags.move_to_end(run.id)
            return dag
        # The file was valid when the run started; limits may have shrunk since, not the file.
        pipeline = parse_pipeline(run.source, filename=run.filename, limits=_UNLIMITED)
        dag = build_dag(pipeline)
        self.remember(run.id, dag)
        return dag

    def remember(self, run_id: str, dag: Dag) -> None:
        self._dags[run_id] = dag
        while len(self._dags) > 256:
            self._dags.popitem(last=False)


_UNLIMITED = Limits(
    max_bytes=1 << 30,
    max_depth=1 << 10,
    max_nodes=1 << 30,
    max_steps=1 << 30,
    max_jobs_per_step=1 << 30,
    max_jobs=1 << 30,
)


def _failed(
    row: RunStep, reason: str, now: float, expected: frozenset[JobStatus] = PENDING
) -> StepUpdate:
    changes: dict[str, object] = {"status": JobStatus.FAILED, "reason": reason, "finished_at": now}
    return StepUpdate(row.step_id, expected, row.generation, changes)


def _from_cache(row: RunStep, hit: RunStep, key: str | None, now: float) -> StepUpdate:
    changes: dict[str, object] = {
        "status": JobStatus.SUCCEEDED,
        "job_id": hit.job_id,
        "attempt": hit.attempt,
        "outputs": dict(hit.outputs),
        "cache_key": key,
        "cached_from": hit.job_id,
        "artifact_sha256": hit.artifact_sha256,
        "artifact_bytes": hit.artifact_bytes,
        "reason": f"cached from {hit.job_id}",
        "started_at": now,
        "finished_at": now,
    }
    return StepUpdate(row.step_id, PENDING, row.generation, changes)


def _run_reason(run: PipelineRun, state: RunState, rows: Iterable[RunStep]) -> str:
    if state is RunState.CANCELLED:
        return f"cancelled by {run.cancelled_by}" if run.cancelled_by else "a step was cancelled"
    if state is RunState.FAILED:
        failed = [row for row in rows if row.status is JobStatus.FAILED]
        if failed:
            first = min(failed, key=lambda row: row.index)
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            return (
                f"{first.step_id} failed: {first.reason}{more}"
                if first.reason
                else (f"{first.step_id} failed{more}")
            )
    return ""
