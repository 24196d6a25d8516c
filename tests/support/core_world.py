"""The server core wired as the composition root wires it, on a store the test chooses, with
worker sessions driven directly (no gRPC stream): the helper the core's tests share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from hodei._proto.hodei.v1 import worker_pb2 as pb
from hodei.adapters.logs.files import FileLogStore
from hodei.domain.jobs import Job, JobSpec, JobState
from hodei.domain.scheduling import WorkerView
from hodei.ports import JobStore, LogStore
from hodei.server.api.grpc.channel import StreamChannel
from hodei.server.api.grpc.worker_service import stream_of
from hodei.server.core.background import Background
from hodei.server.core.bus import EventBus, JobChanged
from hodei.server.core.control import JobControl
from hodei.server.core.dispatch import Dispatcher
from hodei.server.core.loghub import LogHub
from hodei.server.core.orchestrator import Orchestrator
from hodei.server.core.passes import PassSignal
from hodei.server.core.recovery import Recovery
from hodei.server.core.reports import Reports
from hodei.server.core.scheduler import NoCapacity, Scheduler
from hodei.server.core.workers import WorkerRegistry, WorkerSession
from hodei.server.security.audit import Auditor
from hodei.server.security.vault import SecretVault, load_or_create_key


class RecordedDemand(NoCapacity):
    """No provisioner, but every demand for capacity is recorded."""

    def __init__(self) -> None:
        self.waiting: list[list[Job]] = []

    def can_grow(self) -> bool:
        return True

    def demand(self, waiting: list[Job]) -> str | None:
        self.waiting.append(list(waiting))
        return None


class HookedTransitions:
    """Mixed into a store class: `before(target)` runs before every transition (a test
    makes it wait, fail or count)."""

    async def before(self, target: JobState) -> None:
        pass

    async def transition(
        self,
        job_id: str,
        expected: Collection[JobState],
        target: JobState,
        changes: Mapping[str, Any] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Job:
        await self.before(target)
        parent: Any = super()
        return await parent.transition(job_id, expected, target, changes, *args, **kwargs)


class GatedTransitions(HookedTransitions):
    """Holds every move to ASSIGNED until `gate` is set (`holding` is set once one waits), and
    records the target of every transition."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.gate.set()
        self.holding = asyncio.Event()
        self.targets: list[JobState] = []

    async def before(self, target: JobState) -> None:
        if target is JobState.ASSIGNED:
            self.holding.set()
            await self.gate.wait()
        self.targets.append(target)


class World:
    def __init__(
        self,
        store: JobStore,
        tmp: Path,
        retry_backoff_s: float = 1.0,
        send_before_commit: bool = True,
        logs: LogStore | None = None,
    ) -> None:
        self.store = store
        self.bus = EventBus()
        self.hub = LogHub(logs or FileLogStore(tmp / "logs"), self.bus)
        self.vault = SecretVault(store, load_or_create_key(tmp / "key"))
        self.auditor = Auditor(store)
        self.registry = WorkerRegistry(self.bus)
        self.background = Background()
        self.passes = PassSignal()
        self.capacity = RecordedDemand()
        self.orch = Orchestrator(store, self.bus)
        self.reports = Reports(
            self.orch, self.hub, self.passes, self.background, self.auditor, retry_backoff_s
        )
        self.dispatcher = Dispatcher(
            self.orch,
            self.vault,
            self.reports,
            self.passes,
            self.background,
            self.auditor,
            send_before_commit=send_before_commit,
        )
        self.scheduler = Scheduler(
            self.orch, self.registry, self.dispatcher, self.capacity, self.passes, self.background
        )
        self.control = JobControl(self.orch, store, self.registry, self.bus, cancel_grace_s=1)
        self.recovery = Recovery(
            self.registry, self.reports, self.control, store, self.passes, grace_s=5
        )
        self.bus.subscribe(JobChanged, self.scheduler.on_job_changed)
        self.bus.subscribe(JobChanged, lambda e: self.hub.job_changed(e.job))

    @property
    def waiting(self) -> list[list[Job]]:
        return self.capacity.waiting

    def worker(self, worker_id: str, slots: int = 1, **labels: str) -> WorkerSession:
        session = WorkerSession(
            view=WorkerView(worker_id, labels, slots),
            hostname="h",
            provider="test",
            session_id="s",
            channel=StreamChannel("resume"),
        )
        self.registry.add(session)
        self.passes.kick()
        return session

    async def submit(self, command: str = "true", **fields: object) -> Job:
        return await self.orch.submit(JobSpec(command=command, **fields))  # type: ignore[arg-type]

    async def job(self, job_id: str) -> Job:
        return await self.store.get_job(job_id)

    async def until(self, job_id: str, *states: JobState) -> Job:
        for _ in range(400):
            job = await self.job(job_id)
            if job.state in states:
                return job
            await asyncio.sleep(0.005)
        raise AssertionError(f"{job_id} is {job.state}, not {states}")


async def next_message(session: WorkerSession) -> pb.ServerMessage:
    """What the worker's stream sends next (the gRPC edge's channel of the session)."""
    msg = await asyncio.wait_for(stream_of(session).next_message(), 2)
    assert msg is not None
    return msg


async def next_with(session: WorkerSession, field: str) -> pb.ServerMessage:
    """The next message that carries any of `field` (assignments, cancels, result_acks...)."""
    while True:
        msg = await next_message(session)
        if len(getattr(msg, field)):
            return msg


async def assigned(session: WorkerSession) -> list[pb.AssignJob]:
    """The assignments of the next message that carries any."""
    return list((await next_with(session, "assignments")).assignments)


@asynccontextmanager
async def running_world(
    store: JobStore,
    tmp: Path,
    retry_backoff_s: float = 1.0,
    send_before_commit: bool = True,
    logs: LogStore | None = None,
) -> AsyncIterator[World]:
    """A World on `store` (opened and closed here) with its scheduler running."""
    await store.open()
    world = World(store, tmp, retry_backoff_s, send_before_commit, logs)
    world.scheduler.start()
    try:
        yield world
    finally:
        await world.scheduler.stop()
        await world.recovery.stop()
        await world.background.stop()
        world.hub.close()
        await store.close()
