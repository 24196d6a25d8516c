"""The Celery app the benchmark compares Hodei with: Redis broker and result backend.

Workers import it (`celery -A celery_app worker`, cwd bench/) with BENCH_REDIS_URL set; the
bench's client imports it and calls `configure(url)`.
"""

from __future__ import annotations

import os
import subprocess
import time

from celery import Celery

app = Celery("hodei_bench")


def configure(redis_url: str) -> None:
    app.conf.update(
        broker_url=f"{redis_url}/0",
        result_backend=f"{redis_url}/1",
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        result_expires=3600,
    )


configure(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379"))


@app.task(name="bench.shell")  # type: ignore[untyped-decorator]
def shell(command: str) -> dict[str, float]:
    """Run `command` as Hodei runs a one-string command: `bash -c command`."""
    start = time.time()
    code = subprocess.run(["bash", "-c", command], check=False).returncode
    return {"start": start, "end": time.time(), "exit_code": float(code)}


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop() -> dict[str, float]:
    """Return at once (W2's control-plane workload)."""
    now = time.time()
    return {"start": now, "end": now, "exit_code": 0.0}
