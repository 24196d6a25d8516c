"""Garbage-collector set-up for the long-running processes (server and agent)."""

from __future__ import annotations

import gc

# Young objects are collected after this many allocations (CPython's default: 700). A job's
# trip through the server allocates thousands of short-lived objects that reference counting
# frees anyway; collecting less often took ~10-30% off the server's CPU per job in W1 and W2
# (bench/cpu_probe.py), at the cost of cyclic garbage living a little longer.
YOUNG_THRESHOLD = 10_000


def long_lived_from_here() -> None:
    """Move every object alive now (imported modules, the app built at start-up) out of the
    cyclic collector's sight, for the life of the process, and collect young objects less
    often (YOUNG_THRESHOLD).

    A full collection walks every tracked object; in the server that took 50-60 ms, a pause
    of the event loop that showed as the W4 log-latency tail under load (docs/performance.md).
    After this, full collections only walk what was made since: about 2 ms. Only for a
    process's own entry point: what is frozen is never collected, so a test that embeds the
    server must not call it.
    """
    gc.collect()  # what is already garbage is freed, not kept for good
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
