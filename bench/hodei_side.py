"""The order in which Hodei's workloads run, and where their figures go.

1. W5 ready/idle: three fresh servers (no workers), spawn -> ready line, RSS after 1 s idle.
2. Server A (local provider, 2 workers x `slots`): warm-up until both workers are connected,
   then W1, footprint after W1, W3, W4 (idle ticker, firehose, ticker under a W1 burst).
3. Server B (--max-workers 0): W5 agent connect with a real `hodei agent`, then W2 with two
   benchmark-only no-op agents (bench/noop_agent.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import hodei_bench as hb
import profiling
from procs import Procs, rss_mb

T = TypeVar("T")
PROFILE_DIR = Path(__file__).resolve().parent / "results" / "profiles"
W2_BATCH = 500  # jobs per request in the batched W2 (POST /api/v1/jobs/batch)


def log(text: str) -> None:
    print(text, flush=True)


async def _profiled(
    procs: Procs,
    py_spy: str | None,
    targets: dict[str, int],
    out_dir: Path,
    profiles: dict[str, Any],
    work: Callable[[], Awaitable[T]],
) -> T:
    """Run `work` with py-spy recording each of `targets` (name -> pid) when py_spy is set."""
    if not py_spy:
        return await work()
    recs = [
        profiling.start(procs, py_spy, pid, name, out_dir / f"{name}.pyspy.txt")
        for name, pid in targets.items()
    ]
    await asyncio.sleep(0.5)  # let py-spy attach
    try:
        return await work()
    finally:
        for rec in recs:
            profiling.stop(procs, rec)
            top = profiling.top_functions(rec.path)
            profiles[rec.name] = {"file": str(rec.path), **top}
            log(profiling.format_top(rec.name, top))


async def run(
    cfg: Any,
    procs: Procs,
    tmp: Path,
    results: dict[str, dict[str, Any]],
    profiles: dict[str, Any],
    py_spy: str | None,
    stamp: str,
) -> None:
    w5: dict[str, Any] = {}
    results["W5"]["hodei"] = w5
    await _ready_and_idle(procs, tmp, w5)
    await _server_a(cfg, procs, tmp, results, profiles, py_spy if cfg.profile else None, stamp)
    await _server_b(cfg, procs, tmp, results, profiles, py_spy if cfg.profile else None, stamp)
    await _server_c(cfg, procs, tmp, results)


async def _server_c(cfg: Any, procs: Procs, tmp: Path, results: dict[str, dict[str, Any]]) -> None:
    """Experiment: W3 with the no-op executor on bench/traced_server.py, to see which stage of
    the dispatch path the created -> started time goes to."""
    trace = tmp / "server-trace.jsonl"
    trace_dir = tmp / "noop-traces-c"
    trace_dir.mkdir(parents=True, exist_ok=True)
    server = hb.start_server(procs, tmp / "c", "--max-workers", "0", trace=trace)
    agents = []
    try:
        agents = await hb.start_noop_agents(procs, server, cfg.workers, cfg.w2_slots, 30, trace_dir)
        w3 = await hb.guarded(
            "W3 traced", hb.sequential_latency(server, cfg.w3_jobs, cfg.timeout, detail=True)
        )
    finally:
        for agent in agents:
            with contextlib.suppress(Exception):
                procs.stop(agent)
        await hb.stop_server(procs, server)
    if "detail" not in w3:
        return
    stages = hb.dispatch_stages(w3.pop("detail"), trace, trace_dir)
    results["W3"].setdefault("hodei", {})["dispatch_stages_experiment"] = stages
    log("W3 hodei (experiment, traced server, no-op executor): ms per stage, p50 / p99")
    for name, summary in stages.items():
        log(f"  {name:20s} {summary['p50']:7.2f} {summary['p99']:7.2f}")


async def _ready_and_idle(procs: Procs, tmp: Path, w5: dict[str, Any]) -> None:
    ready: list[float] = []
    reported: list[float] = []
    idle: list[float] = []
    for n in range(3):
        server = hb.start_server(procs, tmp / f"ready{n}", "--max-workers", "0")
        ready.append(server.ready_s)
        reported.append(server.ready_reported_s)
        await asyncio.sleep(1.0)
        await server.http.get("/healthz")
        idle.append(rss_mb(server.pid))
        await hb.stop_server(procs, server)
    w5["server_ready_s"] = statistics.median(ready)
    w5["server_ready_all_s"] = ready
    w5["server_ready_reported_s"] = statistics.median(reported)
    w5["server_idle_rss_mb"] = statistics.median(idle)
    log(
        f"W5 hodei: server ready {w5['server_ready_s']:.2f}s (spawn -> ready line; "
        f"{w5['server_ready_reported_s']:.2f}s inside serve()), idle RSS "
        f"{w5['server_idle_rss_mb']:.0f} MB"
    )


async def _server_a(
    cfg: Any,
    procs: Procs,
    tmp: Path,
    results: dict[str, dict[str, Any]],
    profiles: dict[str, Any],
    py_spy: str | None,
    stamp: str,
) -> None:
    w5 = results["W5"]["hodei"]
    server = hb.start_server(
        procs,
        tmp / "a",
        *("--max-workers", str(cfg.workers), "--worker-slots", str(cfg.slots)),
        *("--worker-idle", "1h"),
    )
    try:
        log(f"hodei server A at {server.url} (pid {server.pid}); warming up workers")
        await hb.ensure_workers(server, cfg.workers, cfg.slots, 60)
        agents = server.agent_pids()
        targets = {"w1-server": server.pid} | {f"w1-agent{i}": p for i, p in enumerate(agents)}
        out_dir = PROFILE_DIR / stamp if py_spy else tmp

        def w1() -> Awaitable[dict[str, Any]]:
            job = hb.throughput(server, cfg.w1_jobs, hb.TRUE_JOB, cfg.connections, cfg.timeout)
            return hb.guarded("W1", job)

        out_dir.mkdir(parents=True, exist_ok=True)
        results["W1"]["hodei"] = await _profiled(procs, py_spy, targets, out_dir, profiles, w1)
        log(f"W1 hodei: {_brief(results['W1']['hodei'])}")
        _footprint_after_w1(server, w5)
        results["W3"]["hodei"] = await hb.guarded(
            "W3", hb.sequential_latency(server, cfg.w3_jobs, cfg.timeout)
        )
        log(f"W3 hodei: {_brief(results['W3']['hodei'])}")
        results["W4"]["hodei"] = await _w4(cfg, server)
    finally:
        await hb.stop_server(procs, server)


def _footprint_after_w1(server: hb.HodeiServer, w5: dict[str, Any]) -> None:
    agents = [rss_mb(pid) for pid in server.agent_pids()]
    w5["server_rss_after_w1_mb"] = rss_mb(server.pid)
    w5["agent_rss_after_w1_mb"] = max(agents) if agents else float("nan")
    w5["system_rss_after_w1_mb"] = w5["server_rss_after_w1_mb"] + sum(agents)
    log(
        f"W5 hodei: after W1 server RSS {w5['server_rss_after_w1_mb']:.0f} MB, agents "
        + ", ".join(f"{a:.0f}" for a in agents)
        + " MB"
    )


async def _w4(cfg: Any, server: hb.HodeiServer) -> dict[str, Any]:
    lines = round(cfg.w4_seconds / cfg.w4_period)
    w4: dict[str, Any] = {}
    w4["idle"] = await hb.guarded(
        "W4 idle", hb.log_latency(server, lines, cfg.w4_period, cfg.timeout)
    )
    log(f"W4 hodei idle: {_brief(w4['idle'])}")
    w4["firehose"] = await hb.guarded(
        "W4 firehose", hb.firehose(server, cfg.firehose_mb * 1_000_000, cfg.timeout)
    )
    log(f"W4 hodei firehose: {_brief(w4['firehose'])}")
    w4["loaded"] = await hb.guarded(
        "W4 loaded",
        hb.log_latency_under_load(
            server, cfg.w1_jobs, cfg.connections, lines, cfg.w4_period, cfg.timeout
        ),
    )
    log(f"W4 hodei under load: {_brief(w4['loaded'])}")
    return w4


async def _server_b(
    cfg: Any,
    procs: Procs,
    tmp: Path,
    results: dict[str, dict[str, Any]],
    profiles: dict[str, Any],
    py_spy: str | None,
    stamp: str,
) -> None:
    w5 = results["W5"]["hodei"]
    server = hb.start_server(procs, tmp / "b", "--max-workers", "0")
    agents = []
    trace_dir = tmp / "noop-traces"
    trace_dir.mkdir(parents=True, exist_ok=True)
    try:
        log(f"hodei server B at {server.url} (pid {server.pid}, no provisioning)")
        connect = await hb.guarded("W5 connect", hb.agent_connect(procs, server, 3, 30))
        w5["agent_connect_ms"] = connect.get("connect_ms", {})
        w5["agent_idle_rss_mb"] = connect.get("idle_rss_mb", float("nan"))
        log(f"W5 hodei: agent connect {_brief(connect)}")
        cli = await hb.guarded("W5 cli", hb.agent_connect(procs, server, 3, 30, cli=True))
        w5["agent_connect_cli_ms"] = cli.get("connect_ms", {})
        log(f"W5 hodei: agent connect through the `hodei agent` CLI {_brief(cli)}")
        agents = await hb.start_noop_agents(
            procs, server, cfg.workers, cfg.w2_slots, 30, trace_dir=trace_dir
        )
        noop_w3 = await hb.guarded(
            "W3 no-op", hb.sequential_latency(server, cfg.w3_jobs, cfg.timeout, detail=True)
        )
        results["W3"]["hodei"]["noop_executor"] = noop_w3
        log(f"W3 hodei with the no-op executor (control plane only): {_brief(noop_w3)}")
        targets = {"w2-server": server.pid} | {
            f"w2-noop-agent{i}": a.pid for i, a in enumerate(agents)
        }
        out_dir = PROFILE_DIR / stamp if py_spy else tmp

        def w2() -> Awaitable[dict[str, Any]]:
            job = hb.throughput(server, cfg.w2_jobs, hb.TRUE_JOB, cfg.connections, cfg.timeout)
            return hb.guarded("W2", job)

        out_dir.mkdir(parents=True, exist_ok=True)
        results["W2"]["hodei"] = await _profiled(procs, py_spy, targets, out_dir, profiles, w2)
        results["W2"]["hodei"]["slots_per_agent"] = cfg.w2_slots
        log(f"W2 hodei: {_brief(results['W2']['hodei'])}")
        batched = await hb.guarded(
            "W2 batch",
            hb.throughput(
                server, cfg.w2_jobs, hb.TRUE_JOB, cfg.connections, cfg.timeout, batch=W2_BATCH
            ),
        )
        results["W2"]["hodei"]["batch_submit"] = {**batched, "per_request": W2_BATCH}
        log(f"W2 hodei, {W2_BATCH} jobs per POST /api/v1/jobs/batch: {_brief(batched)}")
    finally:
        for agent in agents:
            with contextlib.suppress(Exception):
                procs.stop(agent)
        await hb.stop_server(procs, server)
    noop = results["W3"].get("hodei", {}).get("noop_executor", {})
    if "detail" in noop:
        noop["legs"] = hb.executor_legs(noop.pop("detail"), trace_dir)
        log(f"W3 hodei no-op legs: {_brief(noop['legs'])}")


def _brief(result: dict[str, Any]) -> str:
    """A one-line progress summary of a workload's result."""
    if "error" in result:
        return f"ERROR {result['error']}"
    parts = []
    for key, value in result.items():
        if isinstance(value, float):
            parts.append(f"{key}={value:.2f}")
        elif isinstance(value, dict) and "p50" in value:
            parts.append(f"{key} p50={value['p50']:.2f} p99={value['p99']:.2f}")
        elif isinstance(value, int | bool | str) and key not in ("timestamps_from",):
            parts.append(f"{key}={value}")
    return ", ".join(parts)
