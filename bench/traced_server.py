"""BENCHMARK ONLY: `hodei server` with timestamps taken along the dispatch path (experiment).

Wraps, in this process only, a few server methods to record when each job passes them
(time.time()): the QUEUED event reaches the scheduler, its dispatch task starts, the
ASSIGNED transition is committed, the assignment is queued on the worker's session, taken into
a ServerMessage, and written to the gRPC stream. At exit the records go to $BENCH_TRACE_FILE as
JSON lines. Used by `run.py --trace-dispatch` to show where W3's created -> started time goes;
nothing in src/ is changed.

    BENCH_TRACE_FILE=trace.jsonl python bench/traced_server.py server --max-workers 0 ...
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from typing import Any

from hodei.domain.jobs import Job, JobState
from hodei.server.api.grpc import channel
from hodei.server.api.grpc import worker_service as grpc_worker
from hodei.server.core import dispatch, orchestrator, scheduler

MARKS: dict[str, dict[str, float]] = defaultdict(dict)


def _mark(job_id: str, name: str) -> None:
    MARKS[job_id].setdefault(name, time.time())


def install() -> None:
    sched = scheduler.Scheduler
    on_job_changed = sched.on_job_changed
    dispatch_job = dispatch.Dispatcher.dispatch
    move = orchestrator.Orchestrator.move
    send_assign = channel.StreamChannel.assign
    next_message = channel.StreamChannel.next_message

    def traced_on_job_changed(self: Any, event: Any) -> None:
        if event.job.state is JobState.QUEUED:
            _mark(event.job.id, "queued_event")
        on_job_changed(self, event)

    async def traced_dispatch(self: Any, job: Job, session: Any) -> None:
        _mark(job.id, "dispatch_task")
        await dispatch_job(self, job, session)

    async def traced_move(self: Any, job: Job, target: JobState, **changes: Any) -> Job:
        if target is JobState.ASSIGNED:
            _mark(job.id, "assign_store_call")
        updated = await move(self, job, target, **changes)
        if target is JobState.ASSIGNED:
            _mark(job.id, "assigned_committed")
        return updated

    def traced_send_assign(self: Any, assign: Any) -> None:
        _mark(assign.job_id, "send_assign")
        send_assign(self, assign)

    async def traced_next_message(self: Any, generation: int = 0) -> Any:
        msg = await next_message(self, generation)
        if msg is not None:
            for assign in msg.assignments:
                _mark(assign.job_id, "message_taken")
        return msg

    async def traced_write_loop(
        self: Any, session: Any, stream: Any, context: Any, generation: int
    ) -> None:
        try:
            while (msg := await stream.next_message(generation)) is not None:
                await context.write(msg)
                for assign in msg.assignments:
                    _mark(assign.job_id, "grpc_written")
        except Exception:
            return

    sched.on_job_changed = traced_on_job_changed  # type: ignore[method-assign]
    dispatch.Dispatcher.dispatch = traced_dispatch  # type: ignore[method-assign]
    orchestrator.Orchestrator.move = traced_move  # type: ignore[method-assign]
    channel.StreamChannel.assign = traced_send_assign  # type: ignore[method-assign]
    channel.StreamChannel.next_message = traced_next_message  # type: ignore[method-assign]
    grpc_worker.WorkerService._write_loop = traced_write_loop  # type: ignore[method-assign]


def dump() -> None:
    path = os.environ.get("BENCH_TRACE_FILE")
    if not path:
        return
    with open(path, "w") as out:
        for job_id, marks in MARKS.items():
            out.write(json.dumps({"job": job_id, **marks}) + "\n")


def main() -> int:
    install()
    from hodei.cli import app

    try:
        app(sys.argv[1:], prog_name="hodei")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    finally:
        dump()
    return 0


if __name__ == "__main__":
    sys.exit(main())
