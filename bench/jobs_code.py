"""The programs the log workloads (W4) run as jobs, and how the bench checks what came back.

Each is passed to `python -c` as an argument (exec'd directly by the agent, no shell).
"""

from __future__ import annotations

import hashlib

# Prints "<i> <time.time()>" every `period` seconds, on an absolute schedule (no drift).
TICKER = """
import sys, time
n, period = int(sys.argv[1]), float(sys.argv[2])
t0 = time.time()
for i in range(n):
    delay = t0 + i * period - time.time()
    if delay > 0:
        time.sleep(delay)
    print(i, repr(time.time()), flush=True)
"""

# Writes `total` bytes of numbered text lines as fast as it can; the bench runs the same
# generator locally to know the checksum of what must arrive.
FIREHOSE = """
import sys

LINE = b"abcdefghijklmnopqrstuvwxyz0123456789" * 2

def blocks(total):
    n = sent = 0
    while sent < total:
        block = b"".join(b"%09d %s\\n" % (i, LINE) for i in range(n, n + 800))
        n += 800
        block = block[: total - sent]
        sent += len(block)
        yield block

if __name__ == "__main__":
    out = sys.stdout.buffer
    for block in blocks(int(sys.argv[1])):
        out.write(block)
    out.flush()
"""


def firehose_digest(total: int) -> str:
    """sha256 of the bytes FIREHOSE writes for `total`."""
    namespace: dict[str, object] = {"__name__": "bench_firehose"}
    exec(compile(FIREHOSE, "firehose", "exec"), namespace)
    blocks = namespace["blocks"]
    digest = hashlib.sha256()
    for block in blocks(total):  # type: ignore[operator]
        digest.update(block)
    return digest.hexdigest()
