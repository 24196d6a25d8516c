"""BENCHMARK ONLY: submit a W1-style burst of `true` jobs from a process of its own.

W4 under load follows a job's log while this runs: in the follower's own event loop, the
burst's connections would delay its reads and count as Hodei's latency.

    python bench/submit_load.py 127.0.0.1:8080 2000 16 300   # host:port jobs connections seconds

Prints {"submitted": N, "first": t, "last_ack": t} (time.time()) as JSON.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass

import orjson
from hodei_bench import TRUE_JOB, submit_many


@dataclass
class _Address:
    host: str
    port: int


async def _main(address: str, count: int, connections: int, limit_s: float) -> None:
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + limit_s
    sub = await submit_many(_Address(host, int(port)), count, TRUE_JOB, connections, deadline)
    print(
        orjson.dumps(
            {"submitted": len(sub.ids), "first": sub.first, "last_ack": sub.last_ack}
        ).decode()
    )


if __name__ == "__main__":
    address, count, connections, limit_s = sys.argv[1:5]
    asyncio.run(_main(address, int(count), int(connections), float(limit_s)))
