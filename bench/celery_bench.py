"""Celery + Redis, the peer: redis-server and Celery workers as processes of this bench.

Redis runs on 127.0.0.1 on a free port with persistence off (no RDB snapshots, no AOF): the
most favourable set-up for Celery; Hodei's store fsyncs every commit. Celery's figures use
the times Celery records itself: the task body's start (returned by the task) and `date_done`
(set when the result is stored), the counterparts of Hodei's started_at and finished_at.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from procs import Child, Procs, rss_mb, tree_pss_mb, tree_rss_mb
from stats import rate, summary_ms

BENCH_DIR = Path(__file__).resolve().parent


class CeleryTimeout(Exception):
    pass


def start_redis(procs: Procs, redis_server: str, port: int, workdir: Path) -> Child:
    argv = [
        redis_server,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
    ]
    child = procs.spawn("redis-server", argv, cwd=workdir)
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or not child.alive():
                raise RuntimeError("redis-server did not start:\n" + child.tail()) from None
            time.sleep(0.02)
    client.close()
    return child


@dataclass
class CeleryWorker:
    child: Child
    ready_s: float


def start_workers(
    procs: Procs, redis_url: str, count: int, concurrency: int, pool: str, timeout: float = 60
) -> list[CeleryWorker]:
    """`count` Celery workers, each with `concurrency` processes/threads of `pool`."""
    env = {**os.environ, "BENCH_REDIS_URL": redis_url}
    children = []
    for n in range(count):
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "celery_app",
            "worker",
            "-P",
            pool,
            "-c",
            str(concurrency),
            "-n",
            f"bench{n}@%h",
            "-l",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        children.append(procs.spawn(f"celery worker {n}", argv, env=env, cwd=BENCH_DIR))
    workers = []
    for child in children:
        got = child.wait_line(lambda line: " ready." in line, timeout)
        if got is None:
            raise RuntimeError("celery worker did not become ready:\n" + child.tail())
        workers.append(CeleryWorker(child, got[1] - child.spawned_at))
    return workers


def stop_workers(procs: Procs, workers: list[CeleryWorker]) -> None:
    for worker in workers:
        procs.stop(worker.child, grace=20)


def footprint(workers: list[CeleryWorker]) -> dict[str, float]:
    pids = [w.child.pid for w in workers]
    return {
        "main_rss_mb": max(rss_mb(p) for p in pids),
        "tree_rss_mb": max(tree_rss_mb(p) for p in pids),
        "tree_pss_mb": max(tree_pss_mb(p) for p in pids),
    }


def _date(value: Any) -> float:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class CeleryClient:
    def __init__(self, redis_url: str) -> None:
        import celery_app
        import redis

        celery_app.configure(redis_url)
        self.tasks = celery_app
        self.app = celery_app.app
        host, port = redis_url.rsplit("/", 1)[-1].split(":")
        self.results = redis.Redis(host=host, port=int(port), db=1)

    def close(self) -> None:
        self.results.close()
        self.app.close()

    def reset_results(self) -> None:
        self.results.flushdb()

    def wait_results(self, count: int, deadline: float, poll_s: float = 0.1) -> None:
        """Poll the result database's key count (one key per stored result)."""
        while True:
            stored = int(self.results.dbsize())
            if stored >= count:
                return
            if time.monotonic() > deadline:
                raise CeleryTimeout(f"{stored} of {count} results stored in time")
            time.sleep(poll_s)

    def metas(self, ids: list[str]) -> list[dict[str, Any]]:
        backend = self.app.backend
        out: list[dict[str, Any]] = []
        for start in range(0, len(ids), 1000):
            keys = [backend.get_key_for_task(i) for i in ids[start : start + 1000]]
            out.extend(json.loads(raw) for raw in self.results.mget(keys) if raw is not None)
        return out

    def submit_many(
        self, send: Callable[[], Any], count: int, threads: int, deadline: float
    ) -> tuple[list[str], float, float]:
        """apply_async `count` times from `threads` threads; (ids, first, last)."""
        per = [count // threads + (1 if i < count % threads else 0) for i in range(threads)]

        def run(n: int) -> list[str]:
            ids = []
            for _ in range(n):
                if time.monotonic() > deadline:
                    raise CeleryTimeout("submission did not finish in time")
                ids.append(send().id)
            return ids

        first = time.time()
        with ThreadPoolExecutor(threads) as pool:
            batches = list(pool.map(run, per))
        return [i for batch in batches for i in batch], first, time.time()


def throughput(
    client: CeleryClient, task: str, count: int, threads: int, timeout: float
) -> dict[str, Any]:
    """W1 (task "shell", `true`) / W2 (task "noop"): first submit -> last date_done."""
    deadline = time.monotonic() + timeout
    client.reset_results()
    if task == "shell":
        shell = client.tasks.shell

        def send() -> Any:
            return shell.apply_async(("true",))
    else:
        noop = client.tasks.noop

        def send() -> Any:
            return noop.apply_async()

    ids, first, last_sent = client.submit_many(send, count, threads, deadline)
    try:
        client.wait_results(count, deadline)
    except CeleryTimeout as exc:
        done = int(client.results.dbsize())
        elapsed = time.time() - first
        return {
            "error": f"timeout: {exc}",
            "completed": False,
            "jobs": count,
            "jobs_done": done,
            "jobs_per_s": rate(done, elapsed),  # of the tasks that ended in time
            "submit_per_s": rate(count, last_sent - first),
            "seconds": elapsed,
        }
    seen = time.time()
    metas = client.metas(ids)
    last = max(_date(m["date_done"]) for m in metas)
    ok = sum(1 for m in metas if m["status"] == "SUCCESS" and m["result"]["exit_code"] == 0)
    return {
        "jobs": count,
        "jobs_per_s": rate(count, last - first),
        "submit_per_s": rate(count, last_sent - first),
        "seconds": last - first,
        "client_seen_done_s": seen - first,
        "succeeded": ok,
        "submit_threads": threads,
        "completed": True,
    }


def sequential_latency(client: CeleryClient, count: int, timeout: float) -> dict[str, Any]:
    """W3: one task at a time: submit -> task start, -> date_done, -> result in the client."""
    deadline = time.monotonic() + timeout
    to_start: list[float] = []
    to_done: list[float] = []
    to_client: list[float] = []
    failed = 0
    for _ in range(count):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CeleryTimeout(f"only {len(to_start)} of {count} tasks in time")
        t0 = time.time()
        result = client.tasks.shell.apply_async(("true",))
        value = result.get(timeout=remaining)
        to_client.append(time.time() - t0)
        to_start.append(value["start"] - t0)
        to_done.append(_date(result.date_done) - t0)
        failed += value["exit_code"] != 0
        result.forget()
    return {
        "jobs": count,
        "submit_to_start_ms": summary_ms(to_start),
        "submit_to_done_ms": summary_ms(to_done),
        "submit_to_client_notified_ms": summary_ms(to_client),
        "failed": failed,
    }


def guarded(name: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return work()
    except CeleryTimeout as exc:
        print(f"  {name}: TIMEOUT {exc}", flush=True)
        return {"error": f"timeout: {exc}"}
    except Exception as exc:
        print(f"  {name}: ERROR {exc!r}", flush=True)
        return {"error": repr(exc)}


def nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value
