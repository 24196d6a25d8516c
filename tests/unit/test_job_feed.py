"""The live job feed of one client (server.core.job_feed): filtered, coalesced, bounded."""

from __future__ import annotations

import asyncio

from hodei.domain.job_filter import job_filter
from hodei.domain.jobs import Job, JobSpec, JobState
from hodei.server.core.bus import EventBus, JobChanged
from hodei.server.core.job_feed import RESYNC, JobFeed, concerns

Q, A, R, S = JobState.QUEUED, JobState.ASSIGNED, JobState.RUNNING, JobState.SUCCEEDED


def job(job_id: str, state: JobState = Q, name: str = "", **labels: str) -> Job:
    return Job(id=job_id, spec=JobSpec(command="x", name=name, labels=labels), state=state)


async def test_changes_come_in_batches_latest_state_first_changed_first() -> None:
    bus = EventBus()
    with JobFeed(bus, job_filter()) as feed:
        bus.publish(JobChanged(job("a"), None))
        bus.publish(JobChanged(job("b"), None))
        bus.publish(JobChanged(job("a", A), Q))
        batch = await feed.next(1)
        assert isinstance(batch, list)
        assert [(j.id, j.state) for j in batch] == [("a", A), ("b", Q)]
        assert await feed.next(0.01) is None  # nothing since: the keep-alive is due


async def test_a_waiting_client_wakes_on_a_change() -> None:
    bus = EventBus()
    with JobFeed(bus, job_filter()) as feed:
        waiting = asyncio.ensure_future(feed.next(5))
        await asyncio.sleep(0.01)
        bus.publish(JobChanged(job("a"), None))
        batch = await asyncio.wait_for(waiting, 1)
        assert isinstance(batch, list) and [j.id for j in batch] == ["a"]


async def test_only_the_jobs_the_filter_concerns() -> None:
    bus = EventBus()
    with JobFeed(bus, job_filter(labels={"team": "infra"}, name="build")) as feed:
        bus.publish(JobChanged(job("a", name="Build", team="infra"), None))
        bus.publish(JobChanged(job("b", name="build", team="web"), None))
        bus.publish(JobChanged(job("c", name="deploy", team="infra"), None))
        batch = await feed.next(1)
        assert isinstance(batch, list) and [j.id for j in batch] == ["a"]


def test_a_job_leaving_the_state_is_told_once_more() -> None:
    queued = job_filter(Q, name="x")
    assert concerns(queued, JobChanged(job("a", Q, "x"), None))
    assert concerns(queued, JobChanged(job("a", A, "x"), Q))  # left: the client drops it
    assert not concerns(queued, JobChanged(job("a", R, "x"), A))  # long gone
    assert concerns(queued, JobChanged(job("a", R, "x"), None, remote=True))  # state before?
    assert not concerns(queued, JobChanged(job("a", R, "x"), None))  # created running: never in
    assert not concerns(queued, JobChanged(job("a", A, "y"), Q))  # never matched
    assert not concerns(job_filter(name="x"), JobChanged(job("a", A, "y"), Q))


async def test_a_client_that_falls_behind_gets_one_resync_then_goes_on() -> None:
    bus = EventBus()
    with JobFeed(bus, job_filter(), limit=3) as feed:
        for n in range(3):
            bus.publish(JobChanged(job(f"j{n}"), None))
        bus.publish(JobChanged(job("j0", A), Q))  # a job already pending takes no room
        assert feed.pending == 3
        for n in range(3, 10):  # beyond the bound: all dropped, and those after too
            bus.publish(JobChanged(job(f"j{n}"), None))
        assert feed.pending == 0 and feed.resyncs == 1
        assert await feed.next(1) is RESYNC
        bus.publish(JobChanged(job("later"), None))
        batch = await feed.next(1)
        assert isinstance(batch, list) and [j.id for j in batch] == ["later"]
        assert feed.resyncs == 1


async def test_leaving_unsubscribes() -> None:
    bus = EventBus()
    with JobFeed(bus, job_filter()):
        assert bus.listened(JobChanged)
    assert not bus.listened(JobChanged)
