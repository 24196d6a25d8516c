"""The order in which Celery's workloads run (the same counts and concurrency as Hodei's).

redis-server on a free port; `workers` Celery workers (prefork, --concurrency `slots`); ready
time and idle RSS; a warm-up; W1; footprint after W1; W3; W2 with the no-op task on the same
workers. W4 has no Celery counterpart (Celery does not stream job output): "n/a".
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import celery_bench as cb
from procs import Procs, free_port, rss_mb, tree_rss_mb
from report import brief


def log(text: str) -> None:
    print(text, flush=True)


def run(
    cfg: Any, procs: Procs, tmp: Path, results: dict[str, dict[str, Any]], redis_server: str
) -> None:
    workdir = tmp / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    redis = cb.start_redis(procs, redis_server, port, workdir)
    url = f"redis://127.0.0.1:{port}"
    log(f"redis-server at {url} (pid {redis.pid})")
    w5: dict[str, Any] = {}
    results["W5"]["celery"] = w5
    workers = cb.start_workers(procs, url, cfg.workers, cfg.slots, "prefork")
    client = cb.CeleryClient(url)
    try:
        w5["worker_ready_s"] = statistics.median(w.ready_s for w in workers)
        time.sleep(1.0)
        w5["worker_idle_rss_mb"] = max(rss_mb(w.child.pid) for w in workers)
        w5["worker_idle_tree"] = cb.footprint(workers)
        w5["redis_idle_rss_mb"] = rss_mb(redis.pid)
        log(
            f"W5 celery: worker ready {w5['worker_ready_s']:.2f}s, main process RSS "
            f"{w5['worker_idle_rss_mb']:.0f} MB (with its pool: "
            f"{w5['worker_idle_tree']['tree_rss_mb']:.0f} MB RSS, "
            f"{w5['worker_idle_tree']['tree_pss_mb']:.0f} MB PSS), redis "
            f"{w5['redis_idle_rss_mb']:.0f} MB"
        )
        warm = cb.guarded(
            "warm-up", lambda: cb.throughput(client, "shell", cfg.slots * cfg.workers * 2, 1, 60)
        )
        if "error" in warm:
            raise RuntimeError(f"celery warm-up failed: {warm['error']}")
        results["W1"]["celery"] = cb.guarded(
            "W1",
            lambda: cb.throughput(client, "shell", cfg.w1_jobs, cfg.submit_threads, cfg.timeout),
        )
        log(f"W1 celery: {brief(results['W1']['celery'])}")
        after = cb.footprint(workers)
        w5["worker_rss_after_w1_mb"] = after["main_rss_mb"]
        w5["worker_after_w1_tree"] = after
        w5["redis_rss_after_w1_mb"] = rss_mb(redis.pid)
        w5["system_rss_after_w1_mb"] = rss_mb(redis.pid) + sum(
            tree_rss_mb(w.child.pid) for w in workers
        )
        results["W3"]["celery"] = cb.guarded(
            "W3", lambda: cb.sequential_latency(client, cfg.w3_jobs, cfg.timeout)
        )
        log(f"W3 celery: {brief(results['W3']['celery'])}")
        results["W2"]["celery"] = cb.guarded(
            "W2",
            lambda: cb.throughput(client, "noop", cfg.w2_jobs, cfg.submit_threads, cfg.timeout),
        )
        results["W2"]["celery"]["concurrency_per_worker"] = cfg.slots
        log(f"W2 celery: {brief(results['W2']['celery'])}")
        results["W4"]["celery"] = {"note": "n/a: Celery does not stream job output"}
    finally:
        client.close()
        cb.stop_workers(procs, workers)
        procs.stop(redis)
