"""Hodei's side of the benchmark: servers and agents as real processes, driven over REST/SSE.

Each server runs on embedded defaults (a fresh temporary HODEI_HOME: SQLite store, local
provider) on 127.0.0.1 with ephemeral ports. Job timestamps (created/started/finished) are read
after each workload from the server's own SQLite file, read-only, because the REST API rounds
them to milliseconds; the REST values are the fallback.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import re
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson
from http_raw import RawConnection
from jobs_code import FIREHOSE, TICKER, firehose_digest
from procs import Child, Procs, rss_mb
from stats import rate, summary_ms

from hodei.agent_bundle import command_in

READY = re.compile(r"hodei server ready: http://([\d.]+):(\d+) grpc (\S+) .*\(([\d.]+)s\)")
BENCH_DIR = Path(__file__).resolve().parent
TRUE_JOB = b'{"command": "true"}'


class WorkloadTimeout(Exception):
    pass


@dataclass
class HodeiServer:
    child: Child
    home: Path
    host: str
    port: int
    grpc: str
    ready_s: float  # spawn -> ready line, measured by the bench
    ready_reported_s: float  # what the server itself reports (from serve() start)
    http: httpx.AsyncClient = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.AsyncClient(base_url=self.url, timeout=60)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.child.pid

    async def finished(self) -> dict[str, float]:
        """hodei_jobs_finished_total by state, from /metrics (cheap to poll)."""
        text = (await self.http.get("/metrics")).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("hodei_jobs_finished_total{"):
                state = line.split('state="', 1)[1].split('"', 1)[0]
                out[state] = float(line.rsplit(" ", 1)[1])
        return out

    async def finished_total(self) -> float:
        return sum((await self.finished()).values())

    async def wait_finished(self, target: float, deadline: float, poll_s: float = 0.1) -> None:
        """Poll /metrics until `target` jobs ended in total; WorkloadTimeout at `deadline`."""
        while True:
            done = await self.finished_total()
            if done >= target:
                return
            if time.monotonic() > deadline:
                raise WorkloadTimeout(f"{done:.0f} of {target:.0f} jobs ended in time")
            await asyncio.sleep(poll_s)

    async def workers(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await self.http.get("/api/v1/workers")).json()["items"]
        return items

    async def otp(self) -> dict[str, str]:
        reply = await self.http.post("/api/v1/workers/otp", json={})
        reply.raise_for_status()
        data: dict[str, str] = reply.json()
        return data

    def agent_pids(self) -> list[int]:
        import psutil

        try:
            return [p.pid for p in psutil.Process(self.pid).children()]
        except psutil.Error:
            return []


def start_server(
    procs: Procs, home: Path, *extra: str, timeout: float = 30, trace: Path | None = None
) -> HodeiServer:
    """`hodei server` on a fresh home; with `trace`, bench/traced_server.py instead (an
    experiment that records dispatch-path timestamps into that file at exit)."""
    env = {**os.environ, "HODEI_HOME": str(home), "HODEI_LOG_LEVEL": "WARNING"}
    for key in ("HODEI_URL", "HODEI_DATABASE_URL", "HODEI_PROVIDER", "HODEI_HTTP_ADDR"):
        env.pop(key, None)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    # --dev: the bench client sends no API token (loopback only).
    argv = [sys.executable, "-m", "hodei", "server", "--dev", "--http-addr", "127.0.0.1:0"]
    if trace is not None:
        env["BENCH_TRACE_FILE"] = str(trace)
        argv = [sys.executable, str(BENCH_DIR / "traced_server.py"), *argv[3:]]
    child = procs.spawn(
        "hodei server", [*argv, "--grpc-addr", "127.0.0.1:0", *extra], env=env, cwd=home
    )
    got = child.wait_line(lambda line: bool(READY.search(line)), timeout)
    if got is None:
        procs.stop(child)
        raise RuntimeError("hodei server did not become ready:\n" + child.tail())
    line, at = got
    match = READY.search(line)
    assert match is not None
    host, port, grpc, reported = match.groups()
    return HodeiServer(child, home, host, int(port), grpc, at - child.spawned_at, float(reported))


async def stop_server(procs: Procs, server: HodeiServer) -> None:
    await server.http.aclose()
    procs.stop(server.child, grace=20)


# ---- submitting -------------------------------------------------------------------------


@dataclass
class Submitted:
    ids: list[str]
    first: float  # time.time() before the first request
    last_ack: float  # time.time() after the last 201


class Address(Protocol):
    host: str
    port: int


async def submit_many(
    server: Address,
    count: int,
    body: bytes,
    connections: int,
    deadline: float,
    batch: int = 0,
) -> Submitted:
    """POST `count` jobs over `connections` keep-alive connections, as fast as they go; with
    `batch`, that many per request to /api/v1/jobs/batch."""
    ids: list[str] = []
    left = [count]
    conns = [RawConnection(server.host, server.port) for _ in range(connections)]
    for conn in conns:
        await conn.connect()

    async def pump(conn: RawConnection) -> None:
        while left[0] > 0:
            if time.monotonic() > deadline:
                raise WorkloadTimeout(f"only {len(ids)} of {count} jobs submitted in time")
            if batch:
                n = min(batch, left[0])
                left[0] -= n
                payload = b'{"jobs":[' + b",".join([body] * n) + b"]}"
                status, reply = await conn.request("POST", "/api/v1/jobs/batch", payload)
                if status != 201:
                    raise RuntimeError(f"batch submit answered {status}: {reply[:300]!r}")
                ids.extend(item["id"] for item in orjson.loads(reply)["items"])
                continue
            left[0] -= 1
            status, reply = await conn.request("POST", "/api/v1/jobs", body)
            if status != 201:
                raise RuntimeError(f"submit answered {status}: {reply[:300]!r}")
            ids.append(orjson.loads(reply)["id"])

    first = time.time()
    try:
        await asyncio.gather(*(pump(c) for c in conns))
    finally:
        for conn in conns:
            await conn.close()
    return Submitted(ids, first, time.time())


# ---- job timestamps ---------------------------------------------------------------------


@dataclass
class JobTimes:
    state: str
    created: float
    started: float | None
    finished: float | None


def _iso(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


async def job_times(server: HodeiServer, ids: list[str]) -> tuple[dict[str, JobTimes], str]:
    """Timestamps of the given jobs and where they came from ("store" or "rest")."""
    try:
        return _times_from_store(server.home / "hodei.db", ids), "store"
    except (sqlite3.Error, OSError, KeyError):
        return await _times_from_rest(server, set(ids)), "rest"


def _times_from_store(db: Path, ids: list[str]) -> dict[str, JobTimes]:
    out: dict[str, JobTimes] = {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                "SELECT id, state, created_at, started_at, finished_at FROM jobs "
                f"WHERE id IN ({marks})",
                chunk,
            )
            for job_id, state, created, started, finished in rows:
                out[job_id] = JobTimes(state, created, started, finished)
    finally:
        conn.close()
    missing = len(set(ids) - set(out))
    if missing:
        raise KeyError(f"{missing} job(s) not in the store")
    return out


async def _times_from_rest(server: HodeiServer, wanted: set[str]) -> dict[str, JobTimes]:
    out: dict[str, JobTimes] = {}
    cursor: str | None = None
    while len(out) < len(wanted):
        params: dict[str, Any] = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        page = (await server.http.get("/api/v1/jobs", params=params)).json()
        for job in page["items"]:
            if job["id"] in wanted:
                created = _iso(job["created_at"])
                assert created is not None
                out[job["id"]] = JobTimes(
                    job["state"], created, _iso(job["started_at"]), _iso(job["finished_at"])
                )
        cursor = page["next"]
        if not cursor:
            break
    return out


# ---- workloads --------------------------------------------------------------------------


async def ensure_workers(server: HodeiServer, count: int, slots: int, limit_s: float) -> None:
    """Warm-up: submit `true` jobs until `count` provisioned workers are connected (a worker
    still being provisioned is waited for, not asked for again)."""
    deadline = time.monotonic() + limit_s
    base = await server.finished_total()
    sent = 0
    while True:
        items = await server.workers()
        connected = [w for w in items if w.get("state") in ("idle", "busy")]
        if len(connected) >= count:
            break
        if time.monotonic() > deadline:
            raise WorkloadTimeout(f"{len(connected)} of {count} workers after {limit_s:.0f}s")
        if len(items) < count:  # not enough workers connected or starting: make demand
            batch = slots * count + 1
            await submit_many(server, batch, TRUE_JOB, 4, deadline)
            sent += batch
        await asyncio.sleep(0.1)
    await server.wait_finished(base + sent, deadline)


async def throughput(
    server: HodeiServer,
    count: int,
    body: bytes,
    connections: int,
    limit_s: float,
    batch: int = 0,
) -> dict[str, Any]:
    """W1/W2: submit `count` jobs as fast as possible; jobs/s from first submit to the last
    completion the server recorded."""
    deadline = time.monotonic() + limit_s
    base = await server.finished_total()
    states_before = await server.finished()
    sub = await submit_many(server, count, body, connections, deadline, batch)
    try:
        await server.wait_finished(base + count, deadline)
    except WorkloadTimeout as exc:
        done = await server.finished_total() - base
        elapsed = time.time() - sub.first
        print(f"  timeout: {exc}; {done:.0f} jobs in {elapsed:.0f}s", flush=True)
        return {
            "error": f"timeout: {exc}",
            "completed": False,
            "jobs": count,
            "jobs_done": done,
            "jobs_per_s": rate(int(done), elapsed),  # of the jobs that ended in time
            "submit_per_s": rate(count, sub.last_ack - sub.first),
            "seconds": elapsed,
            "connections": connections,
        }
    done_at = time.time()
    times, source = await job_times(server, sub.ids)
    last = max(t.finished or 0.0 for t in times.values())
    states_after = await server.finished()
    succeeded = states_after.get("succeeded", 0) - states_before.get("succeeded", 0)
    return {
        "jobs": count,
        "jobs_per_s": rate(count, last - sub.first),
        "submit_per_s": rate(count, sub.last_ack - sub.first),
        "seconds": last - sub.first,
        "client_seen_done_s": done_at - sub.first,
        "succeeded": succeeded,
        "timestamps_from": source,
        "connections": connections,
        "completed": True,
    }


async def sequential_latency(
    server: HodeiServer, count: int, limit_s: float, detail: bool = False
) -> dict[str, Any]:
    """W3: one job at a time on warm workers: submit -> start and submit -> done."""
    deadline = time.monotonic() + limit_s
    conn = RawConnection(server.host, server.port)
    await conn.connect()
    submitted: dict[str, float] = {}
    notified: dict[str, float] = {}
    try:
        for _ in range(count):
            if time.monotonic() > deadline:
                raise WorkloadTimeout(f"only {len(submitted)} of {count} jobs in time")
            t0 = time.time()
            status, reply = await conn.request("POST", "/api/v1/jobs", TRUE_JOB)
            if status != 201:
                raise RuntimeError(f"submit answered {status}: {reply[:300]!r}")
            job_id = orjson.loads(reply)["id"]
            submitted[job_id] = t0
            await _wait_end(server, job_id, deadline)
            notified[job_id] = time.time()
    finally:
        await conn.close()
    times, source = await job_times(server, list(submitted))
    to_start = [(t.started or math.nan) - submitted[i] for i, t in times.items()]
    to_done = [(t.finished or math.nan) - submitted[i] for i, t in times.items()]
    to_client = [notified[i] - submitted[i] for i in submitted]
    to_created = [t.created - submitted[i] for i, t in times.items()]
    created_to_start = [(t.started or math.nan) - t.created for t in times.values()]
    return {
        "jobs": count,
        "submit_to_start_ms": summary_ms(to_start),
        "submit_to_created_ms": summary_ms(to_created),
        "created_to_start_ms": summary_ms(created_to_start),
        "submit_to_done_ms": summary_ms(to_done),
        "submit_to_client_notified_ms": summary_ms(to_client),
        "failed": sum(1 for t in times.values() if t.state != "succeeded"),
        "timestamps_from": source,
        **(
            {"detail": {i: (submitted[i], t.created, t.started) for i, t in times.items()}}
            if detail
            else {}
        ),
    }


async def _wait_end(server: HodeiServer, job_id: str, deadline: float) -> None:
    """Follow the job's SSE stream until its `end` event."""
    remaining = max(1.0, deadline - time.monotonic())
    path = f"/api/v1/jobs/{job_id}/logs/stream"
    async with asyncio.timeout(remaining), server.http.stream("GET", path) as reply:
        async for line in reply.aiter_lines():
            if line.startswith("event: end"):
                return
    raise RuntimeError(f"the log stream of {job_id} ended without an end event")


@dataclass
class SseEvent:
    event: str
    id: int
    data: Any  # a str for `log` events, a dict for `end`
    received: float


async def follow_sse(
    server: HodeiServer, job_id: str, on_event: Callable[[SseEvent], None], deadline: float
) -> None:
    """Feed every SSE event of the job's log stream to on_event, up to and with `end`."""
    path = f"/api/v1/jobs/{job_id}/logs/stream"
    remaining = max(1.0, deadline - time.monotonic())
    event, ident = "message", -1
    async with asyncio.timeout(remaining), server.http.stream("GET", path) as reply:
        async for line in reply.aiter_lines():
            if line.startswith("id: "):
                ident = int(line[4:])
            elif line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                on_event(SseEvent(event, ident, orjson.loads(line[6:]), time.time()))
                if event == "end":
                    return
                event, ident = "message", -1
    raise RuntimeError(f"the log stream of {job_id} ended without an end event")


async def log_latency(
    server: HodeiServer, lines: int, period: float, limit_s: float, priority: int = 0
) -> dict[str, Any]:
    """W4: a job prints a timestamped line every `period` s; latency print -> SSE receive."""
    deadline = time.monotonic() + limit_s
    body = {
        "command": sys.executable,
        "arguments": ["-c", TICKER, str(lines), str(period)],
        "priority": priority,
        "name": "bench-ticker",
    }
    reply = await server.http.post("/api/v1/jobs", json=body)
    reply.raise_for_status()
    job_id = reply.json()["id"]
    latencies: list[float] = []
    pending = [""]
    end: dict[str, Any] = {}

    def on_event(ev: SseEvent) -> None:
        if ev.event == "end":
            end.update(ev.data)
            return
        text = pending[0] + ev.data
        *complete, pending[0] = text.split("\n")
        for line in complete:
            parts = line.split()
            if len(parts) == 2:
                latencies.append(ev.received - float(parts[1]))

    await follow_sse(server, job_id, on_event, deadline)
    return {
        "lines_expected": lines,
        "lines_received": len(latencies),
        "latency_ms": summary_ms(latencies),
        "end": end,
    }


async def firehose(server: HodeiServer, total: int, limit_s: float) -> dict[str, Any]:
    """W4: `total` bytes of log as fast as the job writes them; MB/s and integrity."""
    deadline = time.monotonic() + limit_s
    expected = firehose_digest(total)
    body = {
        "command": sys.executable,
        "arguments": ["-c", FIREHOSE, str(total)],
        "name": "bench-firehose",
    }
    t0 = time.time()
    reply = await server.http.post("/api/v1/jobs", json=body)
    reply.raise_for_status()
    job_id = reply.json()["id"]
    digest = hashlib.sha256()
    state: dict[str, Any] = {"bytes": 0, "in_order": True, "first": 0.0, "last": 0.0}

    def on_event(ev: SseEvent) -> None:
        if ev.event == "end":
            state["end"] = ev.data
            return
        data = ev.data.encode()
        if not state["first"]:
            state["first"] = ev.received
        state["bytes"] += len(data)
        state["last"] = ev.received
        if ev.id != state["bytes"]:  # each event's id is the byte offset after it
            state["in_order"] = False
        digest.update(data)

    await follow_sse(server, job_id, on_event, deadline)
    received = digest.hexdigest()
    stored = await server.http.get(f"/api/v1/jobs/{job_id}/logs")
    stored_ok = hashlib.sha256(stored.content).hexdigest() == expected
    mb = state["bytes"] / 1e6
    return {
        "bytes_expected": total,
        "bytes_received": state["bytes"],
        "mb_per_s": rate(int(mb * 1e6), state["last"] - t0) / 1e6,
        "mb_per_s_streaming": rate(int(mb * 1e6), state["last"] - state["first"]) / 1e6,
        "seconds": state["last"] - t0,
        "intact_in_order": received == expected and bool(state["in_order"]),
        "stored_log_intact": stored_ok,
        "end": state.get("end", {}),
    }


async def log_latency_under_load(
    server: HodeiServer,
    load_jobs: int,
    connections: int,
    lines: int,
    period: float,
    limit_s: float,
) -> dict[str, Any]:
    """W4 under load: the ticker job (high priority) while a W1-style burst saturates."""
    deadline = time.monotonic() + limit_s
    base = await server.finished_total()
    # The burst comes from another process: sharing the follower's event loop, its 16
    # connections would delay the follower's reads and count as Hodei's latency.
    load = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).with_name("submit_load.py")),
        f"{server.host}:{server.port}",
        str(load_jobs),
        str(connections),
        str(limit_s),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        await asyncio.sleep(0.3)
        result = await log_latency(server, lines, period, limit_s, priority=1000)
        result["load_still_running_at_end"] = load.returncode is None
        out, _ = await load.communicate()
        if load.returncode != 0:
            raise RuntimeError(f"the W1 burst failed (exit {load.returncode})")
        await server.wait_finished(base + load_jobs + 1, deadline)
    finally:
        if load.returncode is None:
            load.kill()
            await load.wait()
    result["load_jobs"] = orjson.loads(out)["submitted"]
    return result


def agent_argv(
    cli: bool = False, executable: str = "", image: str = "", grpc: str = ""
) -> list[str]:
    """How W5 starts an agent: `python -m hodei.agent` as local workers are started; with
    `cli` the `hodei agent` command; with `executable` the agent executable directory (on this
    host, or with `image` inside a container of that image, as the Docker provider injects it:
    read-only, host networking, the OTP in the environment)."""
    if image:
        return [
            "docker", "run", "--rm", "--network", "host", "-e", "HODEI_TOKEN",
            "-e", f"HODEI_SERVER_URL={grpc}", "-e", "TMPDIR=/.hodei/tmp",
            "--tmpfs", "/.hodei/tmp:rw,exec,mode=1777",
            "-v", f"{executable}:/.hodei/agent:ro", image, *command_in("/.hodei/agent"),
            "--slots", "1",
        ]  # fmt: skip
    if executable:
        return [*command_in(executable), "--slots", "1"]
    if cli:
        return [sys.executable, "-m", "hodei", "agent", "--slots", "1"]
    return [sys.executable, "-m", "hodei.agent", "--slots", "1"]


async def agent_connect(
    procs: Procs,
    server: HodeiServer,
    repeats: int,
    limit_s: float,
    cli: bool = False,
    executable: str = "",
    image: str = "",
) -> dict[str, Any]:
    """W5: spawn a real agent (see agent_argv) -> visible in GET /api/v1/workers."""
    times: list[float] = []
    rss: list[float] = []
    for _ in range(repeats):
        grant = await server.otp()
        env = {**os.environ, "HODEI_TOKEN": grant["otp"], "HODEI_SERVER_URL": server.grpc}
        argv = agent_argv(cli, executable, image, server.grpc)
        child = procs.spawn("hodei agent", argv, env=env)
        deadline = time.monotonic() + limit_s
        try:
            while not any(w["id"] == grant["worker_id"] for w in await server.workers()):
                if time.monotonic() > deadline or not child.alive():
                    raise WorkloadTimeout("agent did not connect:\n" + child.tail())
                await asyncio.sleep(0.005)
            times.append(time.monotonic() - child.spawned_at)
            await asyncio.sleep(1.0)  # settle, then measure its idle footprint
            if not image:  # in a container the child is the docker client, not the agent
                rss.append(rss_mb(child.pid))
        finally:
            procs.stop(child)
    return {"connect_ms": summary_ms(times), "idle_rss_mb": max(rss) if rss else math.nan}


async def start_noop_agents(
    procs: Procs,
    server: HodeiServer,
    count: int,
    slots: int,
    limit_s: float,
    trace_dir: Path | None = None,
) -> list[Child]:
    """W2: benchmark-only agents (bench/noop_agent.py) as static workers. With `trace_dir`,
    each writes noop-trace-N.txt there when stopped (see noop_agent --trace)."""
    agents: list[Child] = []
    wanted: set[str] = set()
    for _ in range(count):
        grant = await server.otp()
        wanted.add(grant["worker_id"])
        env = {**os.environ, "HODEI_TOKEN": grant["otp"]}
        argv = [sys.executable, str(BENCH_DIR / "noop_agent.py"), "--server", server.grpc]
        if trace_dir is not None:
            argv += ["--trace", str(trace_dir / f"noop-trace-{len(agents)}.txt")]
        agents.append(procs.spawn("noop agent", [*argv, "--slots", str(slots)], env=env))
    deadline = time.monotonic() + limit_s
    while not wanted <= {w["id"] for w in await server.workers()}:
        if time.monotonic() > deadline:
            raise WorkloadTimeout("noop agents did not connect")
        await asyncio.sleep(0.02)
    return agents


STAGES = (
    "queued_event",
    "dispatch_task",
    "assign_store_call",
    "assigned_committed",
    "send_assign",
    "message_taken",
    "executor",
    "started",
)


def dispatch_stages(
    detail: dict[str, Any], server_trace: Path, trace_dir: Path
) -> dict[str, dict[str, float]]:
    """Per stage of the dispatch path, the time since the previous stage (ms summaries);
    the first is measured from created_at. ("grpc_written", when the server's write call
    returned, is kept in the trace file but is no stage: the agent often has the message
    first.)"""
    marks: dict[str, dict[str, float]] = {}
    if server_trace.exists():
        for line in server_trace.read_text().splitlines():
            record = orjson.loads(line)
            marks[record.pop("job")] = record
    for path in trace_dir.glob("noop-trace-*.txt"):
        for line in path.read_text().splitlines():
            job_id, at = line.split()
            marks.setdefault(job_id, {})["executor"] = float(at)
    steps: dict[str, list[float]] = {name: [] for name in STAGES}
    for job_id, (_, created, started) in detail.items():
        job = {**marks.get(job_id, {}), "started": started}
        previous = created
        for name in STAGES:
            moment = job.get(name)
            if moment is None:
                break
            steps[name].append(moment - previous)
            previous = moment
    return {name: summary_ms(values) for name, values in steps.items() if values}


def executor_legs(detail: dict[str, Any], trace_dir: Path) -> dict[str, Any]:
    """Split created -> started of no-op jobs at the moment the agent's executor ran:
    dispatch leg (server -> agent) and report leg (agent -> server records `running`)."""
    called: dict[str, float] = {}
    for path in trace_dir.glob("noop-trace-*.txt"):
        for line in path.read_text().splitlines():
            job_id, at = line.split()
            called[job_id] = float(at)
    dispatch = []
    report = []
    for job_id, (_, created, started) in detail.items():
        if job_id in called and started is not None:
            dispatch.append(called[job_id] - created)
            report.append(started - called[job_id])
    return {
        "created_to_executor_ms": summary_ms(dispatch),
        "executor_to_started_ms": summary_ms(report),
    }


async def guarded(name: str, work: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Run one workload; a timeout or error is recorded in its result, not raised."""
    try:
        return await work
    except (WorkloadTimeout, TimeoutError) as exc:
        print(f"  {name}: TIMEOUT {exc}", flush=True)
        return {"error": f"timeout: {exc}"}
    except (RuntimeError, httpx.HTTPError, OSError) as exc:
        print(f"  {name}: ERROR {exc!r}", flush=True)
        return {"error": repr(exc)}
