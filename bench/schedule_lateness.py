"""How late the schedule timer fires on an idle server: from a fire's due time to the moment
its claim is decided (then the job is created), p50/p99 over many fires.

    python bench/schedule_lateness.py [--fires N] [--postgres URL]

The core runs in this process as the server wires it (store, orchestrator, pipelines, the
ScheduleTimer and its loop), on SQLite (a fresh file) or PostgreSQL (a fresh schema). One
`* * * * *` schedule fires N times. Waiting a real minute per fire would take N minutes, so
the timer's clock is the wall clock plus an offset, and after each fire the offset moves the
next minute boundary 1-2 s ahead (then the timer is poked to read the clock again, as it is
after any schedule change). The timer sleeps on the real event loop until that boundary, so
what is measured is its real wake-up, claim and store commit; `decided_at - scheduled_at`
of each fire row is the lateness, and the job's creation time the latency to a queued job.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from stats import summary_ms

from hodei.adapters.artifacts.files import FileArtifactStore
from hodei.adapters.store.sqlite import SqliteJobStore
from hodei.domain.jobs import Job, JobSpec
from hodei.domain.schedules import FireOutcome
from hodei.ports import JobStore
from hodei.server.core.background import Background
from hodei.server.core.bus import EventBus, JobChanged
from hodei.server.core.orchestrator import Orchestrator
from hodei.server.core.pipelines import PipelineEngine, Pipelines
from hodei.server.core.schedules import Launcher, ScheduleRequest, Schedules, ScheduleTimer
from hodei.server.security.audit import Auditor

MAX_WAIT_S = 10.0  # one fire must come within this, or the bench stops


class ShiftedClock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def next_boundary_in(self, seconds: float) -> None:
        """Move the clock so that the next whole minute is `seconds` of real time away."""
        now = self()
        boundary = (now // 60 + 1) * 60
        self.offset += boundary - seconds - now


async def run(store: JobStore, tmp: Path, fires: int) -> dict[str, Any]:
    clock = ShiftedClock()
    bus, background = EventBus(), Background()
    auditor = Auditor(store, clock=clock)
    orch = Orchestrator(store, bus, clock=clock)

    async def cancel(job_id: str) -> Job:
        return await store.get_job(job_id)

    engine = PipelineEngine(store, orch, cancel, FileArtifactStore(tmp / "a"), bus, background)
    pipelines = Pipelines(store, engine, auditor, clock=clock)
    timer = ScheduleTimer(store, Launcher(orch, pipelines), cancel, pipelines.cancel, auditor,
                          clock=clock)  # fmt: skip
    bus.subscribe(JobChanged, timer.on_job_changed)
    schedules = Schedules(store, timer, auditor, clock=clock)
    clock.next_boundary_in(1.5)
    s = await schedules.create(ScheduleRequest("bench", "* * * * *", spec=JobSpec("true")), "")
    loop = asyncio.create_task(timer.run())
    late: list[float] = []
    to_job: list[float] = []
    try:
        for _ in range(fires):
            deadline = time.monotonic() + MAX_WAIT_S
            while time.monotonic() < deadline:
                got = await store.list_fires(s.id, limit=1)
                # A new fire whose job exists (the claim commits first, then the job).
                if (
                    got
                    and got[0].outcome is FireOutcome.STARTED
                    and len(late) < len(await store.list_fires(s.id, limit=1000))
                ):
                    break
                await asyncio.sleep(0.05)
            else:
                raise SystemExit("no fire within 10 s")
            fire = got[0]
            late.append(fire.decided_at - fire.scheduled_at)
            job = await store.get_job(fire.job_id or "")
            to_job.append(job.created_at - fire.scheduled_at)
            clock.next_boundary_in(random.uniform(1.0, 2.0))
            timer.poke()
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await background.stop()
    return {"fires": len(late), "late": summary_ms(late), "to_job": summary_ms(to_job)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fires", type=int, default=40)
    parser.add_argument("--postgres", help="a PostgreSQL URL (a fresh schema is used)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.postgres:
            import asyncpg

            from hodei.adapters.store.postgres import PostgresJobStore

            schema = f"bench_{random.getrandbits(32):08x}"
            admin = await asyncpg.connect(args.postgres)
            await admin.execute(f"CREATE SCHEMA {schema}")
            sep = "&" if "?" in args.postgres else "?"
            store: JobStore = PostgresJobStore(f"{args.postgres}{sep}search_path={schema}")
        else:
            store = SqliteJobStore(Path(tmp) / "hodei.db")
        await store.open()
        try:
            result = await run(store, Path(tmp), args.fires)
        finally:
            await store.close()
            if args.postgres:
                await admin.execute(f"DROP SCHEMA {schema} CASCADE")
                await admin.close()
    kind = "PostgreSQL" if args.postgres else "SQLite"
    print(f"{kind}: {result['fires']} fires of a * * * * * schedule on an idle core")
    for key, what in (("late", "due -> claimed"), ("to_job", "due -> job stored")):
        s = result[key]
        print(f"  {what:18} p50 {s['p50']:.1f} ms  p90 {s['p90']:.1f} ms  p99 {s['p99']:.1f} ms  "
              f"max {s['max']:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
