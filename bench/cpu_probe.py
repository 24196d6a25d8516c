"""CPU per job of the Hodei server and agents for one throughput workload (a profiling aid).

Wall-clock rates are noisy on a shared 2-core machine; the CPU time the server and agent
processes spend per job is not. `python bench/cpu_probe.py --mode w2 --jobs 2000` starts a
server on a fresh home, two no-op agents (W2) or two provisioned workers (W1), submits the jobs
and prints jobs/s and CPU ms per job of each process (user + system, all threads, children
excluded). `--py-spy FILE` records the server meanwhile (raw collapsed stacks).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from hodei_bench import (
    TRUE_JOB,
    ensure_workers,
    log_latency_under_load,
    sequential_latency,
    start_noop_agents,
    start_server,
    stop_server,
    submit_many,
    throughput,
)
from procs import Procs


def threads_s(pid: int) -> dict[int, float]:
    """CPU seconds per thread id of one process (the main thread's id is the pid)."""
    try:
        return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}
    except psutil.Error:
        return {}


def cpu_s(pids: list[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
        except psutil.Error:
            out[pid] = float("nan")
    return out


async def probe(args: argparse.Namespace, procs: Procs, tmp: Path) -> dict[str, Any]:
    if args.mode == "submit":  # the REST submit path alone: no worker, the jobs stay queued
        server = start_server(procs, tmp / "home", "--max-workers", "0")
        agent_pids = []
    elif args.mode in ("w2", "w3-noop"):
        server = start_server(procs, tmp / "home", "--max-workers", "0")
        await start_noop_agents(procs, server, 2, args.slots or 64, 30)
        agent_pids = [c.pid for c in procs.children if c.name == "noop agent"]
    else:
        server = start_server(
            procs, tmp / "home", "--max-workers", "2", "--worker-slots", str(args.slots or 8)
        )
        await ensure_workers(server, 2, args.slots or 8, 60)
        agent_pids = server.agent_pids()
    spies = []
    targets = [(server.pid, args.py_spy)]
    if args.py_spy_agent:
        targets += [(pid, f"{args.py_spy_agent}.{i}") for i, pid in enumerate(agent_pids)]
    for pid, out in targets:
        if out:
            argv = [
                args.py_spy_bin,
                "record",
                "-p",
                str(pid),
                "-r",
                str(args.rate),
                "-f",
                "raw",
                *args.spy_extra,
            ]
            mode = [] if args.native else ["--nonblocking"]  # --native needs to pause the process
            spies.append(procs.spawn("py-spy", [*argv, "-o", out, *mode, "--threads"]))
    if spies:
        await asyncio.sleep(1.0)
    if args.mode == "w4":
        w4 = await log_latency_under_load(server, args.jobs, 16, 300, 0.01, args.timeout)
        w4.pop("end", None)
        for spy in spies:
            procs.stop(spy, grace=30, sig=signal.SIGINT)
        await stop_server(procs, server)
        return {"mode": "w4", **w4, "load": psutil.getloadavg()}
    if args.mode.startswith("w3"):
        seq = await sequential_latency(server, args.jobs, args.timeout)
        await stop_server(procs, server)
        keys = ("submit_to_start_ms", "submit_to_created_ms", "created_to_start_ms")
        return {"mode": args.mode, **{k: seq[k] for k in keys}, "load": psutil.getloadavg()}
    before = cpu_s([server.pid, *agent_pids])
    threads_before = threads_s(server.pid)
    started = time.monotonic()
    if args.mode == "submit":
        sub = await submit_many(server, args.jobs, TRUE_JOB, 16, time.monotonic() + args.timeout)
        result = {"jobs_per_s": args.jobs / (sub.last_ack - sub.first), "completed": True}
    else:
        result = await throughput(server, args.jobs, TRUE_JOB, 16, args.timeout, batch=args.batch)
    wall = time.monotonic() - started
    after = cpu_s([server.pid, *agent_pids])
    threads_after = threads_s(server.pid)
    for spy in spies:
        procs.stop(spy, grace=30, sig=signal.SIGINT)
    await stop_server(procs, server)
    done = result.get("jobs_done", args.jobs) or args.jobs
    per_job = {
        ("server" if pid == server.pid else f"agent {pid}"): round(
            (after[pid] - before[pid]) * 1000 / done, 3
        )
        for pid in before
    }
    main = threads_after.get(server.pid, 0.0) - threads_before.get(server.pid, 0.0)
    others = sorted(
        (
            (threads_after[t] - threads_before.get(t, 0.0)) * 1000 / done
            for t in threads_after
            if t != server.pid
        ),
        reverse=True,
    )
    return {
        "mode": args.mode,
        "server_threads_ms_per_job": {
            "main": round(main * 1000 / done, 3),
            "others": [round(x, 3) for x in others if x > 0.001],
        },
        "jobs": args.jobs,
        "jobs_per_s": result.get("jobs_per_s"),
        "submit_per_s": result.get("submit_per_s"),
        "wall_s": round(wall, 2),
        "completed": result.get("completed"),
        "cpu_ms_per_job": per_job,
        "cpu_ms_per_job_total": round(sum(per_job.values()), 3),
        "loadavg": psutil.getloadavg(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--mode", choices=("w1", "w2", "w3", "w3-noop", "w4", "submit"), default="w2")
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--slots", type=int)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--batch", type=int, default=0, help="jobs per POST /api/v1/jobs/batch (w1/w2)")
    p.add_argument("--py-spy", help="record the server into this file")
    p.add_argument("--py-spy-agent", help="record each agent into this file + .N")
    p.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    p.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    args = p.parse_args()
    args.spy_extra = ["--native"] if args.native else []
    args.py_spy_bin = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    procs = Procs(lambda text: None)
    tmp = Path(tempfile.mkdtemp(prefix="hodei-probe-"))
    try:
        out = asyncio.run(probe(args, procs, tmp))
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print(out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
