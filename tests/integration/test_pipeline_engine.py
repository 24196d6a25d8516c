"""The pipeline engine on a real store, orchestrator and bus. Steps' jobs are "run" by a small
executor that moves them through their states the way dispatch and reports do (no worker):
what is tested is the engine's deciding, claiming and recording."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from hodei.adapters.store.memory import MemoryJobStore
from hodei.adapters.store.sqlite import SqliteJobStore
from hodei.domain.jobs import Job, JobState
from hodei.domain.pipelines import JobStatus, PipelineError
from hodei.domain.pipelines.runs import RunState, RunStep, parse_step_job_id
from hodei.errors import ConflictError, ValidationError
from hodei.ports import JobStore
from hodei.server.core.background import Background
from hodei.server.core.bus import EventBus, JobChanged, RunChanged
from hodei.server.core.orchestrator import Orchestrator
from hodei.server.core.pipelines import PipelineEngine, Pipelines
from hodei.server.security.audit import Auditor

artifacts_mod = pytest.importorskip("hodei.adapters.artifacts.files")
FileArtifactStore = artifacts_mod.FileArtifactStore

Decide = Callable[[Job], int]  # exit code of a job


class Executor:
    """Runs every queued step job: assigned, running, then ended with `decide(job)`'s exit code
    (0 succeeded, else failed). `hold` keeps jobs whose command contains it running until
    released."""

    def __init__(self, orch: Orchestrator, bus: EventBus, artifacts: object) -> None:
        self.orch = orch
        self.artifacts = artifacts
        self.decide: Decide = lambda job: 1 if "exit 1" in job.spec.command else 0
        self.outputs: dict[str, bytes] = {}  # command fragment -> outputs file text
        self.started: list[str] = []
        self.held: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        bus.subscribe(JobChanged, self._changed)

    def _changed(self, event: JobChanged) -> None:
        job = event.job
        if job.state is JobState.QUEUED and parse_step_job_id(job.id):
            task = asyncio.get_running_loop().create_task(self._run(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, job: Job) -> None:
        with contextlib.suppress(ConflictError):
            job = await self.orch.move(
                job, JobState.ASSIGNED, worker_id="w1", attempts=job.attempts + 1
            )
            job = await self.orch.move(job, JobState.RUNNING, started_at=self.orch.now())
            self.started.append(job.id)
            for fragment, gate in self.held.items():
                if fragment in job.spec.command:
                    await gate.wait()
            for fragment, text in self.outputs.items():
                if fragment in job.spec.command:
                    self.artifacts.put_outputs(job.id, job.attempts, text)  # type: ignore[attr-defined]
            code = self.decide(job)
            target = JobState.SUCCEEDED if code == 0 else JobState.FAILED
            await self.orch.finish(
                job, target, code, "" if code == 0 else f"exited with code {code}"
            )

    async def idle(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class Rig:
    def __init__(self, store: JobStore, tmp: Path) -> None:
        self.store = store
        self.bus = EventBus()
        self.background = Background()
        self.orch = Orchestrator(store, self.bus)
        self.artifacts = FileArtifactStore(tmp / "artifacts")
        self.cancelled: list[str] = []
        self.engine = PipelineEngine(
            store, self.orch, self._cancel, self.artifacts, self.bus, self.background
        )
        self.api = Pipelines(store, self.engine, Auditor(store))
        self.bus.subscribe(JobChanged, self.engine.on_job_changed)
        self.executor = Executor(self.orch, self.bus, self.artifacts)
        self.events: list[RunChanged] = []
        self.bus.subscribe(RunChanged, self.events.append)

    async def _cancel(self, job_id: str) -> Job:
        self.cancelled.append(job_id)
        job = await self.store.get_job(job_id)
        if job.state.terminal:
            raise ConflictError("ended")
        # As JobControl does for a running job: the worker stops it, reports cancelled.
        gate = next((g for f, g in self.executor.held.items() if f in job.spec.command), None)
        self.executor.decide = lambda j, d=self.executor.decide: 130 if j.id == job_id else d(j)
        if gate is not None:
            gate.set()
        return job

    async def settle(self, run_id: str, *states: RunState) -> dict[str, RunStep]:
        want = states or (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.WAITING)
        for _ in range(500):
            await self.executor.idle()
            run = await self.store.get_run(run_id)
            if run.state in want and not self.executor._tasks:
                await asyncio.sleep(0.01)
                await self.executor.idle()
                run = await self.store.get_run(run_id)
                if run.state in want:
                    return {row.step_id: row for row in await self.store.run_steps(run_id)}
            await asyncio.sleep(0.01)
        raise AssertionError(f"run {run_id} is {run.state}, not {want}")


@pytest.fixture(params=["memory", "sqlite"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    store: JobStore = (
        MemoryJobStore() if request.param == "memory" else SqliteJobStore(tmp_path / "db.sqlite")
    )
    await store.open()
    r = Rig(store, tmp_path)
    try:
        yield r
    finally:
        await r.background.stop()
        await store.close()


DEMO = """
name: demo
steps:
  build:
    run: echo building > out.txt
    outputs: [version]
  test:
    needs: [build]
    matrix:
      os: [linux, mac]
    run: echo test ${{ matrix.os }} ${{ steps.build.outputs.version }}
  package:
    needs: [test]
    run: echo package ${{ steps.build.outputs.version }}
  deploy:
    needs: [package]
    when: manual
    run: echo deploy
"""


async def test_a_run_goes_through_its_dag_and_waits_at_the_manual_gate(rig: Rig) -> None:
    rig.executor.outputs["building"] = b"version=1.2.3\n"
    run, steps = await rig.api.run(DEMO, {}, queued_by="alice")
    assert [s.step_id for s in steps] == [
        "build",
        "test[os=linux]",
        "test[os=mac]",
        "package",
        "deploy",
    ]
    rows = await rig.settle(run.id, RunState.WAITING)
    assert rows["build"].outputs == {"version": "1.2.3"}
    assert rows["package"].status is JobStatus.SUCCEEDED
    assert rows["deploy"].status is JobStatus.PENDING
    test_job = await rig.store.get_job(rows["test[os=mac]"].job_id or "")
    assert test_job.spec.command == "echo test mac 1.2.3"  # matrix and outputs rendered
    package_job = await rig.store.get_job(rows["package"].job_id or "")
    assert package_job.spec.command == "echo package 1.2.3"  # an output two steps back
    assert rig.executor.started.index(rows["build"].job_id) < rig.executor.started.index(
        rows["package"].job_id
    )
    await rig.api.approve(run.id, "deploy", "bob")
    rows = await rig.settle(run.id, RunState.SUCCEEDED)
    assert rows["deploy"].status is JobStatus.SUCCEEDED
    audit, _ = await rig.store.list_audit(action="pipeline.")
    assert {(e.actor, e.action) for e in audit} == {
        ("alice", "pipeline.run"),
        ("bob", "pipeline.approve"),
    }
    assert rig.events and rig.events[-1].run.state is RunState.SUCCEEDED
    # Each step ran exactly once.
    assert len(rig.executor.started) == len(set(rig.executor.started)) == 5


async def test_a_failed_step_skips_its_dependents_and_retry_reruns_only_those(rig: Rig) -> None:
    source = DEMO.replace("    when: manual\n", "")
    fail = {"mac": True}
    rig.executor.decide = lambda job: 1 if "test mac" in job.spec.command and fail["mac"] else 0
    run, _ = await rig.api.run(source, {})
    rows = await rig.settle(run.id, RunState.FAILED)
    assert rows["test[os=mac]"].status is JobStatus.FAILED
    assert rows["test[os=linux]"].status is JobStatus.SUCCEEDED
    assert rows["package"].status is JobStatus.SKIPPED
    assert rows["package"].reason == "needs test, which failed"
    assert rows["deploy"].reason == "needs package, which was skipped"
    ended = await rig.store.get_run(run.id)
    assert ended.reason.startswith("test[os=mac] failed")
    before = list(rig.executor.started)
    fail["mac"] = False
    await rig.api.retry(run.id, "carol")
    rows = await rig.settle(run.id, RunState.SUCCEEDED)
    again = rig.executor.started[len(before) :]
    assert sorted(j.rsplit(".", 2)[1] for j in again) == sorted(
        str(rows[s].index) for s in ("test[os=mac]", "package", "deploy")
    )
    assert rows["build"].generation == 0 and rows["test[os=mac]"].generation == 1
    assert rows["test[os=linux]"].job_id in before  # kept, not run again
    with pytest.raises(ConflictError, match="nothing to retry"):
        await rig.api.retry(run.id, "carol")


async def test_cancel_stops_running_steps_and_skips_the_rest(rig: Rig) -> None:
    gate = rig.executor.held.setdefault("echo building", asyncio.Event())
    run, _ = await rig.api.run(DEMO, {})
    for _ in range(200):
        if rig.executor.started:
            break
        await asyncio.sleep(0.01)
    await rig.api.cancel(run.id, "dave")
    rows = await rig.settle(run.id, RunState.CANCELLED)
    assert gate.is_set()
    assert rows["build"].status is JobStatus.FAILED or rows["build"].status is JobStatus.CANCELLED
    assert all(rows[s].status is JobStatus.SKIPPED for s in ("package", "deploy"))
    assert rows["package"].reason == "the run was cancelled by dave"
    assert (await rig.store.get_run(run.id)).reason == "cancelled by dave"
    with pytest.raises(ConflictError):
        await rig.api.cancel(run.id, "dave")


async def test_bad_files_and_params_store_nothing(rig: Rig) -> None:
    with pytest.raises(PipelineError, match="cycle"):
        await rig.api.run(
            "name: x\nsteps:\n  a: {run: 'true', needs: [b]}\n  b: {run: 'true', needs: [a]}\n", {}
        )
    with pytest.raises(ValidationError, match="unknown secret"):
        await rig.api.run("name: x\nsteps:\n  a: {run: 'true', secrets: [NOPE]}\n", {})
    with pytest.raises(ValidationError, match="required"):
        await rig.api.run(
            "name: x\nparams:\n  target: {type: string}\nsteps:\n  a: {run: 'true'}\n", {}
        )
    runs, _ = await rig.store.list_runs()
    assert runs == []


async def test_a_cached_step_is_not_run_again(rig: Rig) -> None:
    source = "name: c\nsteps:\n  deps:\n    run: echo deps\n    cache: true\n    outputs: [v]\n"
    rig.executor.outputs["echo deps"] = b"v=7\n"
    first, _ = await rig.api.run(source, {})
    rows1 = await rig.settle(first.id, RunState.SUCCEEDED)
    second, _ = await rig.api.run(source, {})
    rows2 = await rig.settle(second.id, RunState.SUCCEEDED)
    assert rows2["deps"].cached_from == rows1["deps"].job_id
    assert rows2["deps"].reason == f"cached from {rows1['deps'].job_id}"
    assert rows2["deps"].outputs == {"v": "7"}
    assert len(rig.executor.started) == 1
    third, _ = await rig.api.run(source, {}, no_cache=True)
    await rig.settle(third.id, RunState.SUCCEEDED)
    assert len(rig.executor.started) == 2


async def test_a_crash_between_claim_and_queue_is_made_good_once(rig: Rig, tmp_path: Path) -> None:
    """A step claimed (running, with its job id) whose job was never queued: the next engine
    (a restarted server) queues it; a second engine racing it queues nothing more."""
    run2, _ = await rig.api.run("name: k2\nsteps:\n  a: {run: 'echo a2', when: manual}\n", {})
    row = (await rig.store.run_steps(run2.id))[0]
    from hodei.domain.pipelines.runs import StepUpdate, step_job_id

    job_id = step_job_id(run2.id, 0, 0)
    await rig.store.update_steps(
        run2.id,
        [
            StepUpdate(
                row.step_id,
                frozenset({JobStatus.PENDING}),
                0,
                {"status": JobStatus.RUNNING, "job_id": job_id},
            )
        ],
    )
    other = PipelineEngine(rig.store, rig.orch, rig._cancel, rig.artifacts, rig.bus, rig.background)
    await asyncio.gather(rig.engine.resume(), other.resume())
    rows2 = await rig.settle(run2.id, RunState.SUCCEEDED)
    assert rows2["a"].status is JobStatus.SUCCEEDED
    assert rig.executor.started.count(job_id) == 1


async def test_cancel_asks_each_running_job_to_stop_once(rig: Rig) -> None:
    """Every job's end makes a pass of the cancelled run: none asks the others again."""
    source = "name: w\nsteps:\n" + "".join(f"  s{n}: {{run: 'echo hold{n}'}}\n" for n in range(5))
    for n in range(5):
        rig.executor.held[f"hold{n}"] = asyncio.Event()
    run, _ = await rig.api.run(source, {})
    for _ in range(200):
        if len(rig.executor.started) == 5:
            break
        await asyncio.sleep(0.01)
    await rig.api.cancel(run.id, "erin")
    rows = await rig.settle(run.id, RunState.CANCELLED)
    assert len(rig.cancelled) == 5 and len(set(rig.cancelled)) == 5, rig.cancelled
    assert {row.status for row in rows.values()} == {JobStatus.FAILED}
