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
import subprocess
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hodei_bench as hb
import profiling
from procs import Child, Procs, rss_mb
from report import brief

REPO = Path(__file__).resolve().parent.parent

PROFILE_DIR = Path(__file__).resolve().parent / "results" / "profiles"
W2_BATCH = 500  # jobs per request in the batched W2 (POST /api/v1/jobs/batch)


def log(text: str) -> None:
    print(text, flush=True)


@dataclass
class _Run:
    """What the phases of one Hodei run share: where they record, what they may start."""

    cfg: Any
    procs: Procs
    tmp: Path
    results: dict[str, dict[str, Any]]
    profiles: dict[str, Any]
    py_spy: str | None  # None unless the run is profiled
    stamp: str


def run(
    cfg: Any,
    procs: Procs,
    tmp: Path,
    results: dict[str, dict[str, Any]],
    profiles: dict[str, Any],
    py_spy: str | None,
    stamp: str,
) -> None:
    """Hodei's workloads in the order of the module docstring, on uvloop (asyncio without)."""
    ctx = _Run(cfg, procs, tmp, results, profiles, py_spy if cfg.profile else None, stamp)
    try:
        import uvloop

        uvloop.run(_run(ctx))
    except ImportError:  # pragma: no cover - uvloop comes with hodei on Linux
        asyncio.run(_run(ctx))


async def _run(ctx: _Run) -> None:
    w5: dict[str, Any] = {}
    ctx.results["W5"]["hodei"] = w5
    await _ready_and_idle(ctx.procs, ctx.tmp, w5)
    await _server_a(ctx)
    await _server_b(ctx)
    await _server_c(ctx)


async def _profiled_throughput(
    ctx: _Run, workload: str, server: hb.HodeiServer, agents: dict[str, int], jobs: int
) -> dict[str, Any]:
    """W1 or W2 (`workload`): `jobs` jobs `true` through `server`. In a profiled run, py-spy
    records the server and each of `agents` (name -> pid) meanwhile."""
    cfg, procs, py_spy = ctx.cfg, ctx.procs, ctx.py_spy

    def work() -> Awaitable[dict[str, Any]]:
        job = hb.throughput(server, jobs, hb.TRUE_JOB, cfg.connections, cfg.timeout)
        return hb.guarded(workload, job)

    if not py_spy:
        return await work()
    out_dir = PROFILE_DIR / ctx.stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = {f"{workload.lower()}-server": server.pid} | agents
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
            ctx.profiles[rec.name] = {"file": str(rec.path), **top}
            log(profiling.format_top(rec.name, top))


async def _stop(procs: Procs, server: hb.HodeiServer, agents: list[Child]) -> None:
    """Stop the no-op `agents` (as far as they still run), then `server`."""
    for agent in agents:
        with contextlib.suppress(Exception):
            procs.stop(agent)
    await hb.stop_server(procs, server)


async def _server_c(ctx: _Run) -> None:
    """Experiment: W3 with the no-op executor on bench/traced_server.py, to see which stage of
    the dispatch path the created -> started time goes to."""
    cfg, procs, tmp = ctx.cfg, ctx.procs, ctx.tmp
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
        await _stop(procs, server, agents)
    if "detail" not in w3:
        return
    stages = hb.dispatch_stages(w3.pop("detail"), trace, trace_dir)
    ctx.results["W3"].setdefault("hodei", {})["dispatch_stages_experiment"] = stages
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


async def _server_a(ctx: _Run) -> None:
    cfg, procs, results = ctx.cfg, ctx.procs, ctx.results
    w5 = results["W5"]["hodei"]
    server = hb.start_server(
        procs,
        ctx.tmp / "a",
        *("--max-workers", str(cfg.workers), "--worker-slots", str(cfg.slots)),
        *("--worker-idle", "1h"),
    )
    try:
        log(f"hodei server A at {server.url} (pid {server.pid}); warming up workers")
        await hb.ensure_workers(server, cfg.workers, cfg.slots, 60)
        named = {f"w1-agent{i}": pid for i, pid in enumerate(server.agent_pids())}
        results["W1"]["hodei"] = await _profiled_throughput(ctx, "W1", server, named, cfg.w1_jobs)
        log(f"W1 hodei: {brief(results['W1']['hodei'])}")
        _footprint_after_w1(server, w5)
        results["W3"]["hodei"] = await hb.guarded(
            "W3", hb.sequential_latency(server, cfg.w3_jobs, cfg.timeout)
        )
        log(f"W3 hodei: {brief(results['W3']['hodei'])}")
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
    log(f"W4 hodei idle: {brief(w4['idle'])}")
    w4["firehose"] = await hb.guarded(
        "W4 firehose", hb.firehose(server, cfg.firehose_mb * 1_000_000, cfg.timeout)
    )
    log(f"W4 hodei firehose: {brief(w4['firehose'])}")
    w4["loaded"] = await hb.guarded(
        "W4 loaded",
        hb.log_latency_under_load(
            server, cfg.w1_jobs, cfg.connections, lines, cfg.w4_period, cfg.timeout
        ),
    )
    log(f"W4 hodei under load: {brief(w4['loaded'])}")
    return w4


def _agent_bundle() -> tuple[str, float, str]:
    """(directory, size in MB, error) of the agent executable, built or taken from the cache."""
    built = subprocess.run(
        ["bash", str(REPO / "scripts" / "build_agent_binary.sh")],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if built.returncode != 0:
        return "", 0.0, built.stderr.strip()[-300:]
    bundle = built.stdout.strip()
    size = sum(p.stat().st_size for p in Path(bundle).rglob("*") if p.is_file())
    return bundle, round(size / 1e6, 1), ""


def _has_image(image: str) -> bool:
    inspect = ["docker", "image", "inspect", image]
    return subprocess.run(inspect, capture_output=True, timeout=30, check=False).returncode == 0


async def _agent_executable(ctx: _Run, server: hb.HodeiServer, w5: dict[str, Any]) -> None:
    """W5: the agent as one executable directory (scripts/build_agent_binary.sh): its size,
    and spawn -> registered on this host and inside a busybox-only image (Docker)."""
    bundle, size_mb, error = await asyncio.to_thread(_agent_bundle)
    if error:
        log(f"W5 hodei: no agent executable ({error})")
        return
    w5["agent_executable_mb"] = size_mb
    run = await hb.guarded(
        "W5 executable", hb.agent_connect(ctx.procs, server, 3, 30, executable=bundle)
    )
    w5["agent_connect_executable_ms"] = run.get("connect_ms", {})
    w5["agent_executable_idle_rss_mb"] = run.get("idle_rss_mb", float("nan"))
    log(f"W5 hodei: agent executable ({size_mb} MB) connect {brief(run)}")
    image = "hodei-test-busybox:1"  # scripts/build_test_images.sh
    if not await asyncio.to_thread(_has_image, image):
        log(f"W5 hodei: no {image} on a Docker engine: in-image start not measured")
        return
    boxed = await hb.guarded(
        "W5 in image",
        hb.agent_connect(ctx.procs, server, 3, 60, executable=bundle, image=image),
    )
    w5["agent_connect_in_image_ms"] = boxed.get("connect_ms", {})
    log(f"W5 hodei: agent executable in {image} (docker run -> registered) {brief(boxed)}")


async def _server_b(ctx: _Run) -> None:
    cfg, procs, tmp, results = ctx.cfg, ctx.procs, ctx.tmp, ctx.results
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
        log(f"W5 hodei: agent connect {brief(connect)}")
        cli = await hb.guarded("W5 cli", hb.agent_connect(procs, server, 3, 30, cli=True))
        w5["agent_connect_cli_ms"] = cli.get("connect_ms", {})
        log(f"W5 hodei: agent connect through the `hodei agent` CLI {brief(cli)}")
        await _agent_executable(ctx, server, w5)
        agents = await hb.start_noop_agents(
            procs, server, cfg.workers, cfg.w2_slots, 30, trace_dir=trace_dir
        )
        noop_w3 = await hb.guarded(
            "W3 no-op", hb.sequential_latency(server, cfg.w3_jobs, cfg.timeout, detail=True)
        )
        results["W3"]["hodei"]["noop_executor"] = noop_w3
        log(f"W3 hodei with the no-op executor (control plane only): {brief(noop_w3)}")
        named = {f"w2-noop-agent{i}": a.pid for i, a in enumerate(agents)}
        results["W2"]["hodei"] = await _profiled_throughput(ctx, "W2", server, named, cfg.w2_jobs)
        results["W2"]["hodei"]["slots_per_agent"] = cfg.w2_slots
        log(f"W2 hodei: {brief(results['W2']['hodei'])}")
        batched = await hb.guarded(
            "W2 batch",
            hb.throughput(
                server, cfg.w2_jobs, hb.TRUE_JOB, cfg.connections, cfg.timeout, batch=W2_BATCH
            ),
        )
        results["W2"]["hodei"]["batch_submit"] = {**batched, "per_request": W2_BATCH}
        log(f"W2 hodei, {W2_BATCH} jobs per POST /api/v1/jobs/batch: {brief(batched)}")
    finally:
        await _stop(procs, server, agents)
    noop = results["W3"].get("hodei", {}).get("noop_executor", {})
    if "detail" in noop:
        noop["legs"] = hb.executor_legs(noop.pop("detail"), trace_dir)
        log(f"W3 hodei no-op legs: {brief(noop['legs'])}")
