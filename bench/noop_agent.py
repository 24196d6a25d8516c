"""BENCHMARK ONLY: a Hodei agent whose executor runs nothing (workload W2).

It is the real agent session (`hodei.agent.session.AgentSession`: registration with a single-use
OTP, the HWP stream, batching outbox, acks) with the `executor=` hook replaced by
`noop_executor`, which reports the job started and then exit code 0 at once, so W2 measures the
control plane alone: queue -> schedule -> dispatch -> started -> result. Never use it to run
real jobs: it runs none.

    HODEI_TOKEN=$(otp) python bench/noop_agent.py --server 127.0.0.1:50051 --slots 64
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable

from hodei.agent.runner import JobOutcome
from hodei.agent.session import AgentSession
from hodei.domain.work import Assignment

# (job id, time.time() when the executor was called), kept when --trace is given.
TRACE: list[tuple[str, float]] | None = None


async def noop_executor(
    assign: Assignment,
    on_output: Callable[[bytes], None],
    cancel: asyncio.Event,
    *,
    grace: float | Callable[[], float] = 5.0,
    on_started: Callable[[int], None] | None = None,
) -> JobOutcome:
    """Run nothing: say the job started (pid 0), then that it exited with code 0."""
    if TRACE is not None:
        TRACE.append((assign.job_id, time.time()))
    if on_started is not None:
        on_started(0)
    return JobOutcome(exit_code=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--server", required=True, help="gRPC address host:port")
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument(
        "--trace", help="at exit, write 'job_id time' (executor called) lines to this file"
    )
    args = parser.parse_args(argv)
    token = os.environ.get("HODEI_TOKEN", "")
    if not token:
        print("noop_agent: HODEI_TOKEN (a worker OTP) is required", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="noop-agent: %(levelname)s %(message)s")
    session = AgentSession(args.server, token, {}, args.slots, executor=noop_executor)
    global TRACE
    if args.trace:
        TRACE = []
    try:
        import uvloop

        code = uvloop.run(session.run())
    except ImportError:
        code = asyncio.run(session.run())
    if args.trace and TRACE is not None:
        with open(args.trace, "w") as out:
            out.writelines(f"{job_id} {at!r}\n" for job_id, at in TRACE)
    return code


if __name__ == "__main__":
    sys.exit(main())
