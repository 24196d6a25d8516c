"""Pipelines on the local provider: what running `true` steps as a DAG costs over running the
same jobs flat, and how soon a step starts once what it needs has ended.

    python bench/pipelines_bench.py [--steps 1000] [--workers 2] [--slots 8]

Shapes, each `--steps` steps of `true`: `flat` (the jobs submitted as one batch, no pipeline),
`wide` (one step, then all the others need it), `deep` (chains of 100 steps side by side);
and `chain`, one chain of 100 steps alone.
Per shape: the run time (run created -> last step's job finished), the overhead per step
against flat, and the hand-off latency (a dependent job's start minus the end of the last job
it needs; p50/p99; target: p50 under 5 ms). Also the time to validate a 10,000-step file.
Called by bench/run.py (W6); alone it prints a JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import hodei_bench as hb
from procs import Procs, install_signal_handlers
from stats import summary_ms

CHAIN = 100  # the deep shape's chain length


def wide(steps: int) -> str:
    lines = ["name: wide", "steps:", "  s0:", "    run: 'true'"]
    for n in range(1, steps):
        lines += [f"  s{n}:", "    needs: [s0]", "    run: 'true'"]
    return "\n".join(lines) + "\n"


def chain(steps: int) -> str:
    """One chain of CHAIN steps (`steps` is ignored): the hand-off latency with nothing else
    running."""
    del steps
    lines = ["name: chain", "steps:"]
    for n in range(CHAIN):
        lines += [f"  s{n}:", "    run: 'true'"]
        if n:
            lines.append(f"    needs: [s{n - 1}]")
    return "\n".join(lines) + "\n"


def deep(steps: int) -> str:
    lines = ["name: deep", "steps:"]
    for n in range(steps):
        lines += [f"  s{n}:", "    run: 'true'"]
        if n % CHAIN:
            lines.append(f"    needs: [s{n - 1}]")
    return "\n".join(lines) + "\n"


async def run_pipeline(server: hb.HodeiServer, source: str, limit_s: float) -> dict[str, Any]:
    started = time.time()
    answer = await server.http.post("/api/v1/pipelines", json={"source": source})
    if answer.status_code != 201:
        raise RuntimeError(f"pipeline start answered {answer.status_code}: {answer.text[:300]}")
    run_id = answer.json()["id"]
    deadline = time.monotonic() + limit_s
    while True:
        view = (await server.http.get(f"/api/v1/pipelines/{run_id}")).json()
        if view["state"] not in ("running", "waiting"):
            break
        if time.monotonic() > deadline:
            raise hb.WorkloadTimeout(f"run {run_id} still {view['state']} after {limit_s:.0f}s")
        await asyncio.sleep(0.1)
    if view["state"] != "succeeded":
        raise RuntimeError(f"run {run_id} ended {view['state']}: {view['reason']}")
    steps = view["steps"]
    times, _ = await hb.job_times(server, [step["job_id"] for step in steps])
    finished = max(t.finished or 0.0 for t in times.values())
    by_step = {step["step"]: times[step["job_id"]] for step in steps}
    handoffs = []
    for step in steps:
        if not step["needs"]:
            continue
        ends = [by_step[need].finished or 0.0 for need in step["needs"]]
        start = by_step[step["step"]].started
        if start is not None:
            handoffs.append(max(0.0, start - max(ends)))
    return {
        "steps": len(steps),
        "run_s": round(finished - started, 3),
        "handoff": summary_ms(handoffs),
    }


async def flat(server: hb.HodeiServer, steps: int, limit_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    base = await server.finished_total()
    sub = await hb.submit_many(server, steps, hb.TRUE_JOB, 1, deadline, batch=steps)
    await server.wait_finished(base + steps, deadline)
    times, _ = await hb.job_times(server, sub.ids)
    finished = max(t.finished or 0.0 for t in times.values())
    return {"steps": steps, "run_s": round(finished - sub.first, 3)}


async def measure(
    procs: Procs, tmp: Path, steps: int, workers: int, slots: int, limit_s: float
) -> dict[str, Any]:
    server = hb.start_server(
        procs,
        tmp / "pipelines",
        *("--max-workers", str(workers), "--worker-slots", str(slots), "--worker-idle", "1h"),
    )
    try:
        await hb.ensure_workers(server, workers, slots, 60)
        out: dict[str, Any] = {"flat": await flat(server, steps, limit_s)}
        for name, source in (("wide", wide(steps)), ("deep", deep(steps))):
            figures = await run_pipeline(server, source, limit_s)
            extra = figures["run_s"] - out["flat"]["run_s"]
            figures["overhead_ms_per_step"] = round(extra * 1000 / steps, 3)
            out[name] = figures
        out["chain"] = await run_pipeline(server, chain(steps), limit_s)
        out["validate_10k_ms"] = validate_ms(10_000)
        return out
    finally:
        await hb.stop_server(procs, server)


def run(
    procs: Procs, tmp: Path, steps: int, workers: int, slots: int, limit_s: float
) -> dict[str, Any]:
    """W6 for bench/run.py: the figures, or the error that stopped them."""
    try:
        figures = asyncio.run(measure(procs, tmp, steps, workers, slots, limit_s))
    except (RuntimeError, hb.WorkloadTimeout) as exc:
        print(f"W6 hodei: {exc}", flush=True)
        return {"error": str(exc)}
    print(f"W6 hodei: {brief(figures)}", flush=True)
    return figures


def validate_ms(steps: int) -> float:
    import pipeline_validate

    from hodei.domain.pipelines import Limits, parse_pipeline

    text = pipeline_validate.generate(steps)
    limits = Limits(max_steps=steps, max_jobs=steps * 4)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        parse_pipeline(text, limits=limits)
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


def brief(figures: dict[str, Any]) -> str:
    parts = [f"flat {figures['flat']['run_s']:.2f}s"]
    for name in ("wide", "deep"):
        f = figures[name]
        parts.append(
            f"{name} {f['run_s']:.2f}s (+{f['overhead_ms_per_step']:.2f} ms/step, "
            f"hand-off p50 {f['handoff']['p50']:.1f} ms p99 {f['handoff']['p99']:.1f} ms)"
        )
    f = figures["chain"]
    parts.append(
        f"one {CHAIN}-step chain {f['run_s']:.2f}s (hand-off p50 {f['handoff']['p50']:.1f} ms "
        f"p99 {f['handoff']['p99']:.1f} ms; target p50 < 5 ms)"
    )
    parts.append(f"validate 10k steps {figures['validate_10k_ms']:.0f} ms")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    install_signal_handlers()
    procs = Procs(lambda text: print(text, file=sys.stderr, flush=True))
    tmp = Path(tempfile.mkdtemp(prefix="hodei-bench-pipelines-"))
    try:
        figures = asyncio.run(
            measure(procs, tmp, args.steps, args.workers, args.slots, args.timeout)
        )
    finally:
        procs.stop_all()
    print(brief(figures), file=sys.stderr)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
