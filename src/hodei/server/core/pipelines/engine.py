"""The pipeline engine: advances each run when one of its steps' jobs ends (the runs are
started, cancelled, approved and retried by service.Pipelines, which then asks it to advance).

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

from hodei.domain.jobs import Job, JobSpec
from hodei.domain.pipelines import (
    Dag,
    JobStatus,
    Limits,
    Plan,
    build_dag,
    parse_pipeline,
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
from hodei.domain.pipelines.tracker import Tracker
from hodei.errors import ConflictError, NotFoundError, StoreError, ValidationError
from hodei.ports import ArtifactStore, JobStore
from hodei.server.core.background import Background
from hodei.server.core.bus import EventBus, JobChanged, RunChanged
from hodei.server.core.orchestrator import Orchestrator
from hodei.server.core.pipelines.steps import Ancestry, missing_inputs, prepare, settled
from hodei.server.core.tracing import NO_TRACING, Tracing

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
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self.store = store
        self.orch = orchestrator
        self.tracing = tracing  # a run is one trace, its steps' jobs its children
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
        self._views: OrderedDict[str, _View] = OrderedDict()

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
                self._views.pop(run_id, None)
                return
            dag = self.dag_of(run)
            view = await self._view(run, dag, full=ended is None)
            try:
                written, again = await self._pass(run, dag, view, ended)
            except BaseException:
                self._ended[run_id] = None  # what we took is not recorded: look again
                self._views.pop(run_id, None)
                raise
            if written:
                self.bus.publish(RunChanged(run, tuple(written)))
            if again:
                continue
            concluded = await self._conclude(
                run, view.rows.values(), view.tracker.plan(run.approved)
            )
            if concluded is not run:
                if concluded.state.terminal:
                    self.tracing.run_ended(concluded)
                self.bus.publish(RunChanged(concluded, ()))
            return

    async def _view(self, run: PipelineRun, dag: Dag, *, full: bool) -> _View:
        """The run's rows: as this engine last wrote or read them while the run's version is
        the same and nothing was missed, else from the store. A view that is behind only
        makes a pass do less (every write is a compare-and-swap), never the wrong thing."""
        cached = self._views.get(run.id)
        if cached is not None and cached.version == run.version and not full:
            self._views.move_to_end(run.id)
            return cached
        rows = {row.step_id: row for row in await self.store.run_steps(run.id)}
        view = _View(run.version, rows, dag)
        self._views[run.id] = view
        while len(self._views) > 64:
            self._views.popitem(last=False)
        return view

    async def _pass(
        self, run: PipelineRun, dag: Dag, view: _View, ended: Mapping[str, Job] | None
    ) -> tuple[list[RunStep], bool]:
        """One decision over the run: the ends of its steps' jobs, then what to skip and to
        start given those, all written in one transaction; then the claimed steps' jobs are
        queued. Returns (the rows written, whether to decide again at once: a write lost a
        race, or a step ended as it was started)."""
        settling, lost = await self._settle(dag, view, ended)
        view.expect(settling)
        if run.cancelled_by is not None:
            updates = settling + await self._wind_down(run, view)
            starts: list[StepUpdate] = []
            specs: dict[str, JobSpec] = {}
        else:
            decided = view.tracker.plan(run.approved)
            now = self._clock()
            skips = [_skipped(view.rows[skip.job_id], skip.reason, now) for skip in decided.skips]
            view.expect(skips)
            ready = [view.rows[job.id] for job in decided.ready]
            starts, specs = await self._start(run, dag, view, ready)
            view.expect(starts)
            updates = settling + skips + starts
        results = await self.store.update_steps(run.id, updates) if updates else []
        written = [row for row in results if isinstance(row, RunStep)]
        if len(written) != len(results):  # another server wrote first: read what it wrote
            self._views.pop(run.id, None)
            self._ended[run.id] = None
            return written, True
        for row in written:
            view.rows[row.step_id] = row
        todo = [(row, specs[row.step_id]) for row in written if row.step_id in specs]
        for row in lost:
            try:
                todo.append(
                    (row, prepare(run, dag, dag.job(row.step_id), view.rows, view.ancestry).spec)
                )
            except ValidationError as exc:
                await self._fail_claimed(run.id, row, exc)
        # Queued off the run's lock (the claims are written: nobody else queues them) and
        # together: the store commits them as one group.
        if todo:
            parent = self.tracing.run_context(run)
            self._background.spawn(self._submit_all(run.id, todo, parent))
        ended_now = any(u.changes.get("status") is not JobStatus.RUNNING for u in starts)
        return written, ended_now

    async def _settle(
        self, dag: Dag, view: _View, ended: Mapping[str, Job] | None
    ) -> tuple[list[StepUpdate], list[RunStep]]:
        """The updates that record the ends of running steps' jobs (those in `ended`, or, when
        None, of every running step, read from the store), and the claimed rows whose job
        was never queued (the server that claimed them did not live to)."""
        found: Sequence[Job | BaseException]
        if ended is not None:
            running = [
                row
                for job_id in ended
                if (row := view.by_job.get(job_id)) is not None and row.status is JobStatus.RUNNING
            ]
            found = [ended[row.job_id or ""] for row in running]
        else:
            running = [
                row for row in view.rows.values() if row.status is JobStatus.RUNNING and row.job_id
            ]
            found = await asyncio.gather(
                *(self.store.get_job(row.job_id or "") for row in running),
                return_exceptions=True,
            )
        updates: list[StepUpdate] = []
        lost: list[RunStep] = []
        for row, job in zip(running, found, strict=True):
            if isinstance(job, NotFoundError):
                lost.append(row)
            elif isinstance(job, BaseException):
                raise job
            elif job.state.terminal:
                changes = settled(job, dag.step(row.step).outputs, self.artifacts)
                updates.append(StepUpdate(row.step_id, RUNNING, row.generation, changes))
        return updates, lost

    async def _wind_down(self, run: PipelineRun, view: _View) -> list[StepUpdate]:
        """A cancelled run: its pending steps are skipped, its running steps' jobs cancelled
        (each once per view: every job's end makes a pass, which must not ask them all again)."""
        reason = f"the run was cancelled by {run.cancelled_by}"
        now = self._clock()
        skips = [
            _skipped(row, reason, now)
            for row in view.rows.values()
            if row.status is JobStatus.PENDING
        ]
        for row in view.rows.values():
            if row.status is JobStatus.RUNNING and row.job_id and row.job_id not in view.cancelled:
                view.cancelled.add(row.job_id)
                # It may have ended meanwhile, or not be queued yet: a later pass settles it.
                with contextlib.suppress(ConflictError, NotFoundError):
                    await self._cancel_job(row.job_id)
        return skips

    async def _start(
        self, run: PipelineRun, dag: Dag, view: _View, starting: Sequence[RunStep]
    ) -> tuple[list[StepUpdate], dict[str, JobSpec]]:
        """For each step that may start: its claim (and its job's spec), or its end when it
        cannot run (a rendering error, a missing input) or its result comes from the cache."""
        updates: list[StepUpdate] = []
        specs: dict[str, JobSpec] = {}
        now = self._clock()
        for row in starting:
            job = dag.job(row.step_id)
            try:
                prepared = prepare(run, dag, job, view.rows, view.ancestry)
                if missing := missing_inputs(prepared.spec, self.artifacts):
                    raise ValidationError(
                        f"input artifact {missing[0]} is gone (expired or deleted)"
                    )
            except ValidationError as exc:
                updates.append(_failed(row, f"cannot run: {exc.message}", now))
                continue
            hit = await self._cached(prepared.cache_key)
            if hit is not None:
                updates.append(_from_cache(row, hit, prepared.cache_key, now))
                continue
            changes: dict[str, object] = {
                "status": JobStatus.RUNNING,
                "job_id": step_job_id(run.id, row.index, row.generation),
                "started_at": now,
                "cache_key": prepared.cache_key,
            }
            updates.append(StepUpdate(row.step_id, PENDING, row.generation, changes))
            specs[row.step_id] = prepared.spec
        return updates, specs

    async def _submit_all(
        self, run_id: str, todo: Sequence[tuple[RunStep, JobSpec]], parent: str | None = None
    ) -> None:
        await asyncio.gather(*(self._submit(run_id, row, spec, parent) for row, spec in todo))

    async def _submit(
        self, run_id: str, row: RunStep, spec: JobSpec, parent: str | None = None
    ) -> None:
        """Queue the job of a claimed step (its id is the claim's: a second try is refused);
        `parent`: the run's trace context."""
        assert row.job_id is not None
        try:
            await self.orch.submit_step(spec, row.job_id, parent)
        except ConflictError:
            pass  # queued already (by us before a crash, or by another server)
        except ValidationError as exc:  # a secret deleted since the run started...
            await self._fail_claimed(run_id, row, exc)
        except StoreError as exc:
            # The claim stands; the next full pass finds no job for it and queues it.
            log.warning("run %s: step %s not queued (%s); trying again", run_id, row.step_id, exc)
            self._ended[run_id] = None
            self.poke(run_id)

    async def _fail_claimed(self, run_id: str, row: RunStep, exc: ValidationError) -> None:
        failed = _failed(row, f"cannot run: {exc.message}", self._clock(), RUNNING)
        await self.store.update_steps(run_id, [failed])
        self._views.pop(run_id, None)
        self.poke(run_id)

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
        self, run: PipelineRun, rows: Iterable[RunStep], decided: Plan
    ) -> PipelineRun:
        state = run_state_of(decided.status)
        if run.cancelled_by is not None and state.terminal:
            state = RunState.CANCELLED
        if state is run.state:
            return run
        changes: dict[str, object] = {"state": state}
        if state.terminal:
            changes["finished_at"] = self._clock()
            changes["reason"] = _run_reason(run, state, rows)
        try:
            return await self.store.update_run(run.id, run.version, changes)
        except ConflictError:
            self.poke(run.id)  # changed meanwhile (a cancel, an approval): decide again
            return run

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


class _View:
    """A run's rows as this engine knows them, with the DAG's evaluation kept up to date."""

    def __init__(self, version: int, rows: dict[str, RunStep], dag: Dag) -> None:
        self.version = version
        self.rows = rows
        self.tracker = Tracker(dag, {key: row.status for key, row in rows.items()})
        self.ancestry = Ancestry(dag)
        self.by_job = {row.job_id: row for row in rows.values() if row.job_id}
        self.cancelled: set[str] = set()  # jobs this engine asked to stop (run cancelled)

    def expect(self, updates: Sequence[StepUpdate]) -> None:
        """The rows as they will be once `updates` apply (for deciding the rest of a pass;
        if one does not apply, the whole view is read again)."""
        changed = []
        for update in updates:
            row = self.rows.get(update.step_id)
            if row is not None and row.status in update.expected:
                row = row.with_changes(**update.changes)
                self.rows[update.step_id] = row
                if row.job_id:
                    self.by_job[row.job_id] = row
                changed.append((row.step_id, row.status))
        self.tracker.update(changed)


def _skipped(row: RunStep, reason: str, now: float) -> StepUpdate:
    changes: dict[str, object] = {"status": JobStatus.SKIPPED, "reason": reason, "finished_at": now}
    return StepUpdate(row.step_id, PENDING, row.generation, changes)


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
