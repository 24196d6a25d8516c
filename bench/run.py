"""Hodei Jobs vs Celery + Redis, side by side on this machine: `python bench/run.py`.

Workloads (see docs/performance.md): W1 throughput of shell jobs `true`, W2 control-plane
throughput with a no-op executor, W3 sequential latency on warm workers, W4 log latency over
SSE and a log firehose, W5 footprint (RSS, ready and connect times). Prints every figure for
both systems and their ratio, and writes bench/results/<timestamp>.json.

It sets up what it needs: Celery, redis-py and py-spy from PyPI (into the active virtualenv,
or bench/.venv), Debian's redis-server (apt-get, as root) when missing. Every process it
starts is stopped by pid at the end, also after an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import setup_env

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


@dataclass
class Config:
    w1_jobs: int = 2000
    w2_jobs: int = 20_000
    w3_jobs: int = 200
    w4_seconds: float = 3.0
    w4_period: float = 0.01
    firehose_mb: int = 50
    slots: int = 8  # per worker, W1/W3/W4 (Celery: --concurrency)
    w2_slots: int = 64  # per no-op agent in W2 (Celery keeps its W1 workers)
    workers: int = 2
    connections: int = 16  # concurrent REST submit connections (Hodei)
    submit_threads: int = 4  # apply_async threads (Celery)
    pipeline_steps: int = 1000  # W6
    timeout: float = 300.0  # per workload
    profile: bool = False

    @classmethod
    def quick(cls) -> Config:
        return cls(
            w1_jobs=300,
            w2_jobs=2000,
            w3_jobs=50,
            w4_seconds=1.0,
            firehose_mb=5,
            pipeline_steps=200,
            timeout=120.0,
        )


def log(text: str) -> None:
    print(text, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark Hodei Jobs against Celery + Redis on this machine."
    )
    p.add_argument("--quick", action="store_true", help="a short smoke run (small counts)")
    p.add_argument("--only", choices=("hodei", "celery"), help="run one system only")
    p.add_argument(
        "--profile",
        action="store_true",
        help="record py-spy profiles of the Hodei server and agents during W1 and W2 "
        "(py-spy costs CPU: figures of a profiled run are not comparable)",
    )
    p.add_argument("--w1-jobs", type=int)
    p.add_argument("--w2-jobs", type=int)
    p.add_argument("--w3-jobs", type=int)
    p.add_argument("--slots", type=int, help="slots per worker (Celery concurrency) in W1")
    p.add_argument("--w2-slots", type=int, help="slots per no-op agent in W2")
    p.add_argument("--timeout", type=float, help="seconds allowed per workload")
    p.add_argument("--keep", action="store_true", help="keep the temporary directories")
    p.add_argument("--out", type=Path, help="JSON file (default bench/results/<time>.json)")
    return p.parse_args(argv)


def make_config(args: argparse.Namespace) -> Config:
    cfg = Config.quick() if args.quick else Config()
    for name in ("w1_jobs", "w2_jobs", "w3_jobs", "slots", "w2_slots", "timeout"):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    cfg.profile = bool(args.profile)
    return cfg


def machine() -> dict[str, Any]:
    import psutil

    versions: dict[str, str] = {}
    from importlib.metadata import PackageNotFoundError, version

    for package in ("hodei", "celery", "kombu", "redis", "grpcio", "uvicorn", "fastapi"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "missing"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_env.ensure_python_env()
    redis_server = setup_env.ensure_redis_server() if args.only != "hodei" else ""
    py_spy = setup_env.py_spy()
    if args.profile and py_spy is None:
        log("py-spy is not installed: running without profiles")
        args.profile = False
    cfg = make_config(args)

    from procs import Procs, install_signal_handlers

    install_signal_handlers()
    procs = Procs(log)
    tmp = Path(tempfile.mkdtemp(prefix="hodei-bench-"))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, dict[str, Any]] = {f"W{i}": {} for i in range(1, 7)}
    profiles: dict[str, Any] = {}
    started = time.monotonic()
    log(f"hodei bench ({'quick' if args.quick else 'full'}): {asdict(cfg)}")
    load: dict[str, list[float]] = {"start": list(os.getloadavg())}
    if load["start"][0] > 0.5:
        log(
            f"warning: load average {load['start'][0]:.2f} before the run: other processes "
            "share this machine, figures will be lower than on an idle one"
        )
    try:
        import spawn_floor

        results["floor"] = {"hodei": spawn_floor.measure(1.0)}
        if args.only != "celery":
            import hodei_side

            hodei_side.run(cfg, procs, tmp, results, profiles, py_spy, stamp)
            import pipelines_bench  # W6: Hodei only (no peer here runs DAGs of shell jobs)

            results["W6"]["hodei"] = pipelines_bench.run(
                procs, tmp, cfg.pipeline_steps, cfg.workers, cfg.slots, cfg.timeout
            )
            load["after_hodei"] = list(os.getloadavg())
        if args.only != "hodei":
            import celery_side

            celery_side.run(cfg, procs, tmp, results, redis_server)
            load["after_celery"] = list(os.getloadavg())
    except KeyboardInterrupt:
        log("interrupted: stopping every process the bench started")
        raise
    finally:
        procs.stop_all()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return finish(args, cfg, results, profiles, stamp, time.monotonic() - started, load)


def _clean(value: Any) -> Any:
    """NaN (a figure that could not be measured) becomes null in the JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def finish(
    args: argparse.Namespace,
    cfg: Config,
    results: dict[str, dict[str, Any]],
    profiles: dict[str, Any],
    stamp: str,
    seconds: float,
    load: dict[str, list[float]],
) -> int:
    from report import build_rows, format_table, rows_json

    rows = build_rows(results)
    log("")
    log(format_table(rows))
    floor = results.get("floor", {}).get("hodei", {})
    if floor:
        log("\nW1 floor: spawning `true` serially from one Python process on this machine")
        for name, fig in floor.items():
            log(
                f"  {name:20s} {fig['per_s']:6.0f}/s  CPU per job: "
                f"{fig['parent_cpu_ms_each']:.2f} ms parent + "
                f"{fig['child_cpu_ms_each']:.2f} ms child"
            )
    out = args.out or RESULTS_DIR / f"{stamp}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "timestamp": stamp,
        "mode": "quick" if args.quick else "full",
        "profiled": cfg.profile,
        "seconds": round(seconds, 1),
        "config": asdict(cfg),
        "machine": machine(),
        "load_average": {**load, "end": list(os.getloadavg())},
        "rows": rows_json(rows),
        "results": results,
        "profiles": profiles,
    }
    out.write_text(json.dumps(_clean(document), indent=2, default=str, allow_nan=False) + "\n")
    log(f"\nresults written to {out} ({seconds:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
